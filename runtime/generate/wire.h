// Byte encodings of what rank 0 and the replica leaders exchange (launcher/replicas.h): requests,
// cancels, the events of a step and a replica's figures. Little-endian, fixed-width fields, no
// versioning (every rank runs the same binary: World::check_same_arguments). A decoder throws
// gptj::Error on a buffer that ends early or has bytes left over, never reads past its end.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/generate/engine.h"

namespace gptj::wire {

class Writer {
 public:
  template <typename T>
  void put(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const uint8_t*>(&value);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
  }
  void put_string(const std::string& s);
  template <typename T>
  void put_vector(const std::vector<T>& v) {
    put<uint32_t>(static_cast<uint32_t>(v.size()));
    const auto* p = reinterpret_cast<const uint8_t*>(v.data());
    bytes_.insert(bytes_.end(), p, p + v.size() * sizeof(T));
  }
  std::vector<uint8_t> take() { return std::move(bytes_); }

 private:
  std::vector<uint8_t> bytes_;
};

class Reader {
 public:
  Reader(const uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  template <typename T>
  T get() {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    std::memcpy(&value, take(sizeof(T)), sizeof(T));
    return value;
  }
  std::string get_string();
  template <typename T>
  std::vector<T> get_vector() {
    const uint32_t n = get<uint32_t>();
    GPTJ_CHECK(n <= (size_ - pos_) / sizeof(T), "replica message: a list of {} items runs past its end", n);
    std::vector<T> v(n);
    if (n) std::memcpy(v.data(), take(n * sizeof(T)), n * sizeof(T));
    return v;
  }
  bool at_end() const { return pos_ == size_; }
  void expect_end() const;

 private:
  const uint8_t* take(std::size_t n);
  const uint8_t* data_;
  std::size_t size_, pos_ = 0;
};

std::vector<uint8_t> encode_request(const GenerationRequest& request);
GenerationRequest decode_request(const std::vector<uint8_t>& bytes);

// One event as sent: the event itself, and (on a finish) every token the sequence kept, since a
// stop string may have removed some already reported. Rank 0 keeps the token lists.
struct WireEvent {
  GenerationEvent event;             // event.generated is null
  std::vector<int32_t> final_tokens; // the sequence's tokens, when event.finish != kNone
};
// A leader's report after a step: its figures and the step's events.
std::vector<uint8_t> encode_report(const ReplicaStats& stats, const std::vector<GenerationEvent>& events);
void decode_report(const std::vector<uint8_t>& bytes, ReplicaStats& stats, std::vector<WireEvent>& events);

}  // namespace gptj::wire
