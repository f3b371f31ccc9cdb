#include "runtime/core/npy.h"

#include <fstream>
#include <sstream>

#include "runtime/core/error.h"

namespace gptj {

void write_npy_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  std::string dims;
  int64_t count = 1;
  for (auto d : shape) {
    dims += std::to_string(d) + ", ";
    count *= d;
  }
  if (shape.size() > 1) dims.resize(dims.size() - 2);
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  while ((10 + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  GPTJ_CHECK(out.good(), "cannot write {}", path);
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.write(reinterpret_cast<const char*>(&len), 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(float)));
  GPTJ_CHECK(out.good(), "write to {} failed", path);
}

std::vector<float> read_npy_f32(const std::string& path, std::vector<int64_t>& shape) {
  std::ifstream in(path, std::ios::binary);
  GPTJ_CHECK(in.good(), "cannot open {}", path);
  char magic[8];
  uint16_t len = 0;
  in.read(magic, 8);
  in.read(reinterpret_cast<char*>(&len), 2);
  GPTJ_CHECK(in.good() && std::string(magic + 1, 5) == "NUMPY", "{}: not a .npy file", path);
  std::string header(len, ' ');
  in.read(header.data(), len);
  GPTJ_CHECK(header.find("'<f4'") != std::string::npos, "{}: not float32", path);
  GPTJ_CHECK(header.find("False") != std::string::npos, "{}: Fortran order is not supported", path);
  const auto open = header.find('('), close = header.find(')');
  std::stringstream dims(header.substr(open + 1, close - open - 1));
  shape.clear();
  int64_t count = 1;
  for (std::string item; std::getline(dims, item, ',');) {
    if (item.find_first_not_of(' ') == std::string::npos) continue;
    shape.push_back(std::stoll(item));
    count *= shape.back();
  }
  std::vector<float> data(static_cast<std::size_t>(count));
  in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(count * sizeof(float)));
  GPTJ_CHECK(in.good(), "{}: truncated data", path);
  return data;
}

}  // namespace gptj
