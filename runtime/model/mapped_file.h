// A whole file memory-mapped read-only (MAP_PRIVATE). The MappedFile owns the mapping: pointers
// into it (TensorInfo::data, zip entry spans) stay valid while it lives. An empty file maps to
// nothing (data() is null, size() 0); the format readers then refuse it as truncated.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace gptj {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws "<path>: cannot open (...)" and the like
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return static_cast<const uint8_t*>(mapping_); }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Drops the mapped pages from this process's memory (they are clean file pages): after a rank
  // has copied its shard, the file need not count in its RSS. Later reads fault pages back in.
  void release_pages() const;

 private:
  std::string path_;
  void* mapping_ = nullptr;
  std::size_t size_ = 0;
};

// Drops the whole pages inside [begin, begin + bytes) of any mapping (see release_pages).
void release_mapped_range(const void* begin, std::size_t bytes);

}  // namespace gptj
