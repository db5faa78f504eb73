// Reading and writing NumPy .npy files: format versions 1 and 2 (and 3, whose only change is the
// header's encoding), little-endian float32, float16, int32 and int64, C order. Every failure
// returns false with a message naming the file and what is wrong with it; nothing throws.
#pragma once

#include <stdint.h>

#include <string>
#include <vector>

namespace ringattn {
namespace npy {

enum class Kind { kF32, kF16, kI32, kI64 };

struct Array {
  Kind kind = Kind::kF32;
  std::vector<int64_t> shape;
  std::vector<unsigned char> data;  // raw little-endian elements, C order
  int64_t size() const;             // number of elements (at most 2^48)
  std::string shape_string() const;
};

// The header is checked before anything is allocated: a shape of at most 64 non-negative entries
// whose non-zero entries multiply to at most 2^48 (the library's limit on a tensor, so that no
// product of entries overflows), and data that fill the rest of the file exactly. `path` must
// name a seekable file. On failure *out is left as it was.
bool read(const std::string& path, Array* out, std::string* err);
// Values as float (float32 / float16 arrays) or int64 (int32 / int64 arrays).
bool to_float(const Array& a, std::vector<float>* out, std::string* err);
bool to_int64(const Array& a, std::vector<int64_t>* out, std::string* err);

bool write_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data,
               std::string* err);

}  // namespace npy
}  // namespace ringattn
