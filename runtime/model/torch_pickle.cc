#include "runtime/model/torch_pickle.h"

#include <memory>
#include <set>
#include <string_view>
#include <unordered_map>

#include "runtime/core/error.h"

namespace gptj {
namespace {

enum class Kind : uint8_t { kNone, kBool, kInt, kString, kTuple, kList, kDict, kGlobal, kStorage, kTensor };
enum class Global : uint8_t { kOrderedDict, kRebuildTensorV2, kStorageF32, kStorageF16, kStorageBF16 };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "a bool";
    case Kind::kInt: return "an int";
    case Kind::kString: return "a string";
    case Kind::kTuple: return "a tuple";
    case Kind::kList: return "a list";
    case Kind::kDict: return "a dict";
    case Kind::kGlobal: return "a global";
    case Kind::kStorage: return "a storage";
    case Kind::kTensor: return "a tensor";
  }
  return "?";
}

struct Node {
  Kind kind = Kind::kNone;
  Global global{};               // kGlobal
  DType dtype{};                 // kStorage
  int64_t number = 0;            // kInt, kBool; kStorage: numel
  std::string text;              // kString; kStorage: key
  std::vector<uint32_t> items;   // kTuple, kList; kDict: key, value, key, value...
  std::unique_ptr<PickledTensor> tensor;  // kTensor
};

// At most this many values (a GPT-J-6B state dict needs ~5,000): a bigger pickle is refused
// instead of being allowed to take gigabytes.
constexpr std::size_t kMaxNodes = 1'000'000;

class Unpickler {
 public:
  Unpickler(const uint8_t* bytes, std::size_t size, const std::string& where)
      : p_(bytes), size_(size), where_(where) {}

  std::vector<PickledTensor> run() {
    for (;;) {
      op_at_ = at_;
      const uint8_t op = byte();
      if (op == '.') break;
      step(op);
    }
    const Node& top = node(pop());
    GPTJ_CHECK(top.kind == Kind::kDict, "{}: the pickle holds {}, not a state dict", where_, kind_name(top.kind));
    std::vector<PickledTensor> out;
    std::set<std::string_view> names;
    for (std::size_t i = 0; i < top.items.size(); i += 2) {
      const Node& key = node(top.items[i]);
      Node& value = nodes_[top.items[i + 1]];
      GPTJ_CHECK(key.kind == Kind::kString, "{}: a state dict key is {}, not a string", where_, kind_name(key.kind));
      GPTJ_CHECK(value.kind == Kind::kTensor, "{}: state dict entry '{}' is {}, not a tensor", where_, key.text,
                 kind_name(value.kind));
      GPTJ_CHECK(names.insert(key.text).second, "{}: the state dict lists tensor '{}' twice", where_, key.text);
      out.push_back(*value.tensor);
      out.back().name = key.text;
    }
    return out;
  }

 private:
  template <typename... Args>
  [[noreturn]] void bad(fmt::format_string<Args...> format, Args&&... args) const {
    fail("{}: pickle byte {}: {}", where_, op_at_, fmt::format(format, std::forward<Args>(args)...));
  }

  // --- input ---
  const uint8_t* take(uint64_t n) {
    if (n > size_ - at_) bad("truncated pickle (an opcode's argument of {} bytes runs past its end)", n);
    const uint8_t* out = p_ + at_;
    at_ += n;
    return out;
  }
  uint8_t byte() {
    if (at_ >= size_) bad("truncated pickle (no STOP opcode)");
    return p_[at_++];
  }
  uint64_t le(int n) {
    const uint8_t* b = take(static_cast<uint64_t>(n));
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | b[i];
    return v;
  }
  std::string line() {  // GLOBAL's arguments: text up to a newline
    std::size_t end = at_;
    while (end < size_ && p_[end] != '\n') ++end;
    if (end >= size_) bad("truncated pickle (GLOBAL without its newline)");
    std::string out(reinterpret_cast<const char*>(p_ + at_), end - at_);
    at_ = end + 1;
    return out;
  }

  // --- values ---
  uint32_t make(Node n) {
    if (nodes_.size() >= kMaxNodes) bad("more than {} values: too large for a state dict", kMaxNodes);
    nodes_.push_back(std::move(n));
    return static_cast<uint32_t>(nodes_.size() - 1);
  }
  uint32_t make(Kind kind) {
    Node n;
    n.kind = kind;
    return make(std::move(n));
  }
  void push(uint32_t id) { stack_.push_back(id); }
  void push(Node n) { push(make(std::move(n))); }
  std::size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  uint32_t pop() {
    if (stack_.size() <= floor()) bad("stack underflow");
    const uint32_t id = stack_.back();
    stack_.pop_back();
    return id;
  }
  uint32_t top() {
    if (stack_.size() <= floor()) bad("stack underflow");
    return stack_.back();
  }
  std::vector<uint32_t> pop_mark() {  // the values since the last MARK, and the mark itself
    if (marks_.empty()) bad("no MARK on the stack");
    std::vector<uint32_t> out(stack_.begin() + static_cast<long>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return out;
  }
  const Node& node(uint32_t id) const { return nodes_[id]; }
  Node& expect(uint32_t id, Kind kind, const char* what) {
    if (nodes_[id].kind != kind) bad("{} must be {}, not {}", what, kind_name(kind), kind_name(nodes_[id].kind));
    return nodes_[id];
  }
  uint32_t sequence(Kind kind, std::vector<uint32_t> items) {
    Node n;
    n.kind = kind;
    n.items = std::move(items);
    return make(std::move(n));
  }
  uint32_t integer(int64_t v) {
    Node n;
    n.kind = Kind::kInt;
    n.number = v;
    return make(std::move(n));
  }
  uint32_t string(const uint8_t* b, uint64_t n) {
    Node s;
    s.kind = Kind::kString;
    s.text.assign(reinterpret_cast<const char*>(b), n);
    return make(std::move(s));
  }
  void add_pairs(uint32_t dict, const std::vector<uint32_t>& kv) {
    if (kv.size() % 2) bad("SETITEMS needs key, value pairs (got {} values)", kv.size());
    Node& d = expect(dict, Kind::kDict, "the target of SETITEM(S)");
    d.items.insert(d.items.end(), kv.begin(), kv.end());
  }
  void memo_put(uint64_t index) { memo_[index] = top(); }
  uint32_t memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) bad("memo entry {} was never stored", index);
    return it->second;
  }

  uint32_t global(const std::string& module, const std::string& name) {
    static const std::unordered_map<std::string, Global> kAllowed = {
        {"collections.OrderedDict", Global::kOrderedDict},
        {"torch._utils._rebuild_tensor_v2", Global::kRebuildTensorV2},
        {"torch.FloatStorage", Global::kStorageF32},
        {"torch.HalfStorage", Global::kStorageF16},
        {"torch.BFloat16Storage", Global::kStorageBF16}};
    const std::string full = module + "." + name;
    auto it = kAllowed.find(full);
    if (it == kAllowed.end()) {
      const bool storage = module == "torch" && name.size() > 7 && name.rfind("Storage") == name.size() - 7;
      bad("pickle global '{}' is not allowed ({}); nothing was run", full,
          storage ? "tensor storage type not supported: F32, F16, BF16"
                  : "a state dict needs only collections.OrderedDict, torch._utils._rebuild_tensor_v2 and the "
                    "Float/Half/BFloat16 storage classes");
    }
    Node n;
    n.kind = Kind::kGlobal;
    n.global = it->second;
    return make(std::move(n));
  }

  // ('storage', StorageClass, key, location, numel) -> a storage record.
  uint32_t persistent(uint32_t pid) {
    const Node& t = expect(pid, Kind::kTuple, "a persistent id");
    if (t.items.size() != 5) bad("a persistent id must have 5 items ('storage', class, key, location, numel), not {}",
                                 t.items.size());
    const Node& tag = expect(t.items[0], Kind::kString, "a persistent id's tag");
    if (tag.text != "storage") bad("persistent id tag '{}' is not 'storage'", tag.text);
    const Node& cls = expect(t.items[1], Kind::kGlobal, "a persistent id's storage class");
    Node s;
    s.kind = Kind::kStorage;
    switch (cls.global) {
      case Global::kStorageF32: s.dtype = DType::kF32; break;
      case Global::kStorageF16: s.dtype = DType::kF16; break;
      case Global::kStorageBF16: s.dtype = DType::kBF16; break;
      default: bad("a persistent id's storage class is not a storage class");
    }
    s.text = expect(t.items[2], Kind::kString, "a storage key").text;
    expect(t.items[3], Kind::kString, "a storage location");
    s.number = expect(t.items[4], Kind::kInt, "a storage's element count").number;
    return make(std::move(s));
  }

  std::vector<int64_t> ints(uint32_t id, const char* what) {
    std::vector<int64_t> out;
    for (uint32_t item : expect(id, Kind::kTuple, what).items) out.push_back(expect(item, Kind::kInt, what).number);
    return out;
  }

  // callable(*args) for the two callables a state dict uses.
  uint32_t reduce(uint32_t callable, uint32_t args_id) {
    const Node& f = expect(callable, Kind::kGlobal, "REDUCE's callable");
    const std::vector<uint32_t> args = expect(args_id, Kind::kTuple, "REDUCE's arguments").items;
    if (f.global == Global::kOrderedDict) {
      if (!args.empty()) bad("OrderedDict() is called with {} arguments; a state dict passes none", args.size());
      return make(Kind::kDict);
    }
    if (f.global != Global::kRebuildTensorV2) bad("a storage class cannot be called");
    // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    if (args.size() != 6 && args.size() != 7) bad("_rebuild_tensor_v2 takes 6 or 7 arguments, not {}", args.size());
    const Node& storage = expect(args[0], Kind::kStorage, "_rebuild_tensor_v2's storage");
    auto t = std::make_unique<PickledTensor>();
    t->dtype = storage.dtype;
    t->storage_key = storage.text;
    t->storage_numel = storage.number;
    t->offset = expect(args[1], Kind::kInt, "_rebuild_tensor_v2's storage_offset").number;
    t->shape = ints(args[2], "_rebuild_tensor_v2's size");
    t->stride = ints(args[3], "_rebuild_tensor_v2's stride");
    if (t->shape.size() != t->stride.size()) bad("a tensor's size has {} dims but its stride {}", t->shape.size(),
                                                 t->stride.size());
    expect(args[4], Kind::kBool, "_rebuild_tensor_v2's requires_grad");
    Node n;
    n.kind = Kind::kTensor;
    n.tensor = std::move(t);
    return make(std::move(n));
  }

  void step(uint8_t op) {
    switch (op) {
      case 0x80: {  // PROTO
        const uint8_t v = byte();
        if (v < 2 || v > 5) bad("pickle protocol {} (2 to 5 are read)", v);
        return;
      }
      case 0x95: le(8); return;  // FRAME: its length; the framed opcodes follow inline
      case '(': marks_.push_back(stack_.size()); return;  // MARK
      case '0': pop(); return;                           // POP
      case '1': pop_mark(); return;                      // POP_MARK
      case 'N': push(make(Kind::kNone)); return;
      case 0x88:
      case 0x89: {  // NEWTRUE, NEWFALSE
        Node n;
        n.kind = Kind::kBool;
        n.number = op == 0x88;
        push(std::move(n));
        return;
      }
      case 'J': push(integer(static_cast<int32_t>(static_cast<uint32_t>(le(4))))); return;  // BININT
      case 'K': push(integer(static_cast<int64_t>(le(1)))); return;                        // BININT1
      case 'M': push(integer(static_cast<int64_t>(le(2)))); return;                        // BININT2
      case 0x8a: {  // LONG1: n bytes, little-endian two's complement
        const uint8_t n = byte();
        if (n > 8) bad("an integer of {} bytes is too large", n);
        uint64_t v = n ? le(n) : 0;
        if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign-extend
        push(integer(static_cast<int64_t>(v)));
        return;
      }
      case 'X': {  // BINUNICODE
        const uint64_t n = le(4);
        push(string(take(n), n));
        return;
      }
      case 0x8c: {  // SHORT_BINUNICODE
        const uint64_t n = le(1);
        push(string(take(n), n));
        return;
      }
      case 0x8d: {  // BINUNICODE8
        const uint64_t n = le(8);
        push(string(take(n), n));
        return;
      }
      case '}': push(make(Kind::kDict)); return;   // EMPTY_DICT
      case ']': push(make(Kind::kList)); return;   // EMPTY_LIST
      case ')': push(make(Kind::kTuple)); return;  // EMPTY_TUPLE
      case 't': push(sequence(Kind::kTuple, pop_mark())); return;  // TUPLE
      case 'l': push(sequence(Kind::kList, pop_mark())); return;   // LIST
      case 'd': {                                                  // DICT
        const uint32_t d = make(Kind::kDict);
        add_pairs(d, pop_mark());
        push(d);
        return;
      }
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1, TUPLE2, TUPLE3
        std::vector<uint32_t> items(op - 0x84);
        for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop();
        push(sequence(Kind::kTuple, std::move(items)));
        return;
      }
      case 'q': memo_put(le(1)); return;           // BINPUT
      case 'r': memo_put(le(4)); return;           // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); return;   // MEMOIZE
      case 'h': push(memo_get(le(1))); return;     // BINGET
      case 'j': push(memo_get(le(4))); return;     // LONG_BINGET
      case 'c': {                                  // GLOBAL
        const std::string module = line();
        push(global(module, line()));
        return;
      }
      case 0x93: {  // STACK_GLOBAL
        const uint32_t name = pop();
        const uint32_t module = pop();
        push(global(expect(module, Kind::kString, "STACK_GLOBAL's module").text,
                    expect(name, Kind::kString, "STACK_GLOBAL's name").text));
        return;
      }
      case 'R': {  // REDUCE
        const uint32_t args = pop();
        push(reduce(pop(), args));
        return;
      }
      case 'b': {  // BUILD: sets an object's state; only an OrderedDict's attributes (_metadata) occur
        pop();
        expect(top(), Kind::kDict, "the target of BUILD");
        return;
      }
      case 's': {  // SETITEM
        const uint32_t value = pop();
        const uint32_t key = pop();
        add_pairs(top(), {key, value});
        return;
      }
      case 'u': {  // SETITEMS
        const std::vector<uint32_t> kv = pop_mark();
        add_pairs(top(), kv);
        return;
      }
      case 'a': {  // APPEND
        const uint32_t value = pop();
        expect(top(), Kind::kList, "the target of APPEND").items.push_back(value);
        return;
      }
      case 'e': {  // APPENDS
        const std::vector<uint32_t> values = pop_mark();
        Node& list = expect(top(), Kind::kList, "the target of APPENDS");
        list.items.insert(list.items.end(), values.begin(), values.end());
        return;
      }
      case 'Q': push(persistent(pop())); return;  // BINPERSID
      default:
        bad("pickle opcode 0x{:02x} is not supported in a state dict (only what torch.save writes for one is read)",
            op);
    }
  }

  const uint8_t* p_;
  std::size_t size_;
  const std::string& where_;
  std::size_t at_ = 0, op_at_ = 0;
  std::vector<Node> nodes_;
  std::vector<uint32_t> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<uint64_t, uint32_t> memo_;
};

}  // namespace

std::vector<PickledTensor> read_state_dict_pickle(const uint8_t* bytes, std::size_t size, const std::string& where) {
  return Unpickler(bytes, size, where).run();
}

}  // namespace gptj
