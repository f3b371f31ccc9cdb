// The directory of a zip archive whose entries are *stored* (method 0, uncompressed), as
// torch.save writes them: read from the end-of-central-directory record (zip64 records when
// present), each central header, and each entry's local header (which gives where its data
// starts; the local sizes are ignored, torch writes them as 0 with a data descriptor). Refused,
// with the archive's path and the entry's name: compressed or encrypted entries, multi-disk
// archives, a directory or local header outside the file, a local name that differs from the
// central one, data running past the file's end or into the central directory, duplicate names.
// CRC-32s are not verified (that would read every byte of a many-GB checkpoint on every rank).
// Ownership: a ZipArchive is a view; it holds no bytes. Its entries point into the caller's
// buffer (usually a MappedFile), which must outlive every use of them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gptj {

struct ZipEntry {
  std::string name;
  const uint8_t* data = nullptr;  // first byte of the entry's (uncompressed) data
  uint64_t size = 0;
};

class ZipArchive {
 public:
  // `path` is for error messages only.
  ZipArchive(const uint8_t* bytes, std::size_t size, const std::string& path);

  const std::vector<ZipEntry>& entries() const { return entries_; }  // central directory order
  const ZipEntry* find(std::string_view name) const;                 // null when absent
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<ZipEntry> entries_;
};

}  // namespace gptj
