// Test helper: a fresh directory under the system temp dir, removed (with its files) at the end.
#pragma once
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>

namespace gptj::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& tag = "gptj_test") {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            (tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace gptj::testing
