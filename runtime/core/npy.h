// Minimal .npy (NumPy format 1.0) writer and reader for float32 C-order arrays.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace gptj {

void write_npy_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data);
// Reads a little-endian float32 C-order .npy; fills shape.
std::vector<float> read_npy_f32(const std::string& path, std::vector<int64_t>& shape);

}  // namespace gptj
