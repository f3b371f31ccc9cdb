#include "runtime/model/zip_archive.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "runtime/core/error.h"

namespace gptj {
namespace {

constexpr uint32_t kLocalHeader = 0x04034b50, kCentralHeader = 0x02014b50, kEndOfDirectory = 0x06054b50,
                   kZip64End = 0x06064b50, kZip64Locator = 0x07064b50;
constexpr std::size_t kEndSize = 22, kLocatorSize = 20, kZip64EndSize = 56, kCentralSize = 46, kLocalSize = 30;

// Little-endian reads, bounds-checked against the archive: every offset is checked before use.
class Reader {
 public:
  Reader(const uint8_t* bytes, std::size_t size, const std::string& path) : bytes_(bytes), size_(size), path_(path) {}
  // Throws unless [at, at + n) lies inside the archive.
  void need(uint64_t at, uint64_t n, const char* what) const {
    GPTJ_CHECK(at <= size_ && n <= size_ - at, "{}: corrupt zip archive, the {} at byte {} ({} bytes) runs past the "
               "end of the file ({} bytes)", path_, what, at, n, size_);
  }
  uint64_t le(uint64_t at, int n) const {  // n bytes at `at`, already checked by need()
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | bytes_[at + static_cast<uint64_t>(i)];
    return v;
  }
  const uint8_t* at(uint64_t offset) const { return bytes_ + offset; }
  std::size_t size() const { return size_; }

 private:
  const uint8_t* bytes_;
  std::size_t size_;
  const std::string& path_;
};

struct Directory {
  uint64_t entries, offset, size;
};

// The end-of-central-directory record: the last signature within the final 64 KiB + 22 bytes
// whose comment ends inside the file; then, when a zip64 locator precedes it, the zip64 record.
Directory find_directory(const Reader& r, const std::string& path) {
  GPTJ_CHECK(r.size() >= kEndSize, "{}: truncated zip archive ({} bytes, no end-of-central-directory record)", path,
             r.size());
  const uint64_t lowest = r.size() - kEndSize > 0xFFFF ? r.size() - kEndSize - 0xFFFF : 0;
  uint64_t end = r.size() - kEndSize + 1;
  do {
    GPTJ_CHECK(end > lowest, "{}: not a zip archive (no end-of-central-directory record; truncated, or not "
               "written by torch.save?)", path);
    --end;
  } while (r.le(end, 4) != kEndOfDirectory || end + kEndSize + r.le(end + 20, 2) > r.size());
  GPTJ_CHECK(r.le(end + 4, 2) == 0 && r.le(end + 6, 2) == 0, "{}: multi-disk zip archives are not supported", path);
  Directory d{r.le(end + 10, 2), r.le(end + 16, 4), r.le(end + 12, 4)};
  if (end >= kLocatorSize && r.le(end - kLocatorSize, 4) == kZip64Locator) {
    const uint64_t at = r.le(end - kLocatorSize + 8, 8);
    r.need(at, kZip64EndSize, "zip64 end-of-central-directory record");
    GPTJ_CHECK(r.le(at, 4) == kZip64End, "{}: corrupt zip archive, no zip64 end-of-central-directory record at "
               "byte {}", path, at);
    GPTJ_CHECK(r.le(at + 16, 4) == 0 && r.le(at + 20, 4) == 0, "{}: multi-disk zip archives are not supported", path);
    d = {r.le(at + 32, 8), r.le(at + 48, 8), r.le(at + 40, 8)};
  }
  r.need(d.offset, d.size, "central directory");
  // Each central header takes at least 46 bytes: a larger count is corrupt (and is not allocated).
  GPTJ_CHECK(d.entries <= d.size / kCentralSize, "{}: corrupt zip archive, {} entries cannot fit in a {}-byte "
             "central directory", path, d.entries, d.size);
  return d;
}

}  // namespace

ZipArchive::ZipArchive(const uint8_t* bytes, std::size_t size, const std::string& path) : path_(path) {
  const Reader r(bytes, size, path_);
  const Directory dir = find_directory(r, path_);
  entries_.reserve(dir.entries);
  std::set<std::string_view> names;
  uint64_t at = dir.offset;
  for (uint64_t i = 0; i < dir.entries; ++i) {
    GPTJ_CHECK(at + kCentralSize <= dir.offset + dir.size && r.le(at, 4) == kCentralHeader,
               "{}: corrupt zip archive, central directory entry {} (byte {}) is not a central header", path_, i, at);
    const uint64_t flags = r.le(at + 8, 2), method = r.le(at + 10, 2);
    uint64_t compressed = r.le(at + 20, 4), uncompressed = r.le(at + 24, 4), local = r.le(at + 42, 4);
    const uint64_t name_len = r.le(at + 28, 2), extra_len = r.le(at + 30, 2), comment_len = r.le(at + 32, 2);
    const uint64_t next = at + kCentralSize + name_len + extra_len + comment_len;
    GPTJ_CHECK(next <= dir.offset + dir.size, "{}: corrupt zip archive, central directory entry {} runs past the "
               "directory's end", path_, i);
    ZipEntry entry;
    entry.name.assign(reinterpret_cast<const char*>(r.at(at + kCentralSize)), name_len);
    // The zip64 extra field holds, in this order, the 64-bit values of the fields set to all ones.
    for (uint64_t x = at + kCentralSize + name_len, x_end = x + extra_len; x + 4 <= x_end;) {
      const uint64_t id = r.le(x, 2), len = r.le(x + 2, 2);
      GPTJ_CHECK(x + 4 + len <= x_end, "{}: corrupt zip archive, entry '{}': an extra field runs past its end", path_,
                 entry.name);
      if (id == 0x0001) {
        uint64_t field = x + 4;
        for (uint64_t* value : {&uncompressed, &compressed, &local}) {
          if (*value != 0xFFFFFFFF) continue;
          GPTJ_CHECK(field + 8 <= x + 4 + len, "{}: corrupt zip archive, entry '{}': zip64 extra field too short",
                     path_, entry.name);
          *value = r.le(field, 8);
          field += 8;
        }
      }
      x += 4 + len;
    }
    GPTJ_CHECK((flags & 1) == 0, "{}: entry '{}' is encrypted", path_, entry.name);
    GPTJ_CHECK(method == 0, "{}: entry '{}' is compressed (zip method {}{}); only stored (uncompressed) entries "
               "can be memory-mapped: save it again with torch.save, which stores them", path_, entry.name, method,
               method == 8 ? ", deflate" : "");
    GPTJ_CHECK(compressed == uncompressed, "{}: corrupt zip archive, stored entry '{}' has compressed size {} but "
               "size {}", path_, entry.name, compressed, uncompressed);
    r.need(local, kLocalSize, "local header");
    GPTJ_CHECK(r.le(local, 4) == kLocalHeader, "{}: corrupt zip archive, entry '{}': no local header at byte {}",
               path_, entry.name, local);
    const uint64_t local_name = r.le(local + 26, 2), local_extra = r.le(local + 28, 2);
    r.need(local + kLocalSize, local_name + local_extra, "local header");
    GPTJ_CHECK(local_name == name_len && std::memcmp(r.at(local + kLocalSize), entry.name.data(), name_len) == 0,
               "{}: corrupt zip archive, entry '{}': its local header names another file", path_, entry.name);
    const uint64_t data = local + kLocalSize + local_name + local_extra;
    GPTJ_CHECK(data <= dir.offset && uncompressed <= dir.offset - data,
               "{}: truncated or corrupt zip archive, entry '{}' ({} bytes at byte {}) runs past the start of the "
               "central directory (byte {})", path_, entry.name, uncompressed, data, dir.offset);
    entry.data = r.at(data);
    entry.size = uncompressed;
    entries_.push_back(std::move(entry));
    at = next;
  }
  for (const auto& entry : entries_)
    GPTJ_CHECK(names.insert(entry.name).second, "{}: corrupt zip archive, entry '{}' appears twice", path_, entry.name);
}

const ZipEntry* ZipArchive::find(std::string_view name) const {
  auto it = std::find_if(entries_.begin(), entries_.end(), [&](const ZipEntry& e) { return e.name == name; });
  return it == entries_.end() ? nullptr : &*it;
}

}  // namespace gptj
