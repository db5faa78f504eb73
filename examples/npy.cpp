#include "npy.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "host_dtype.h"

namespace ringattn {
namespace npy {
namespace {

size_t item_size(Kind k) { return k == Kind::kF16 ? 2 : (k == Kind::kI64 ? 8 : 4); }

bool fail(std::string* err, const std::string& path, const std::string& what) {
  *err = path + ": " + what;
  return false;
}

// The value of 'key' in the header dict, as raw text up to the next top-level comma or brace.
bool dict_value(const std::string& h, const std::string& key, std::string* out) {
  size_t p = h.find("'" + key + "'");
  if (p == std::string::npos) return false;
  p = h.find(':', p);
  if (p == std::string::npos) return false;
  ++p;
  while (p < h.size() && h[p] == ' ') ++p;
  size_t e = p;
  if (p < h.size() && h[p] == '(') {
    e = h.find(')', p);
    if (e == std::string::npos) return false;
    ++e;
  } else {
    while (e < h.size() && h[e] != ',' && h[e] != '}') ++e;
  }
  *out = h.substr(p, e - p);
  while (!out->empty() && out->back() == ' ') out->pop_back();
  return true;
}

// Longer headers are not .npy files that numpy writes (it pads to 64 bytes; 1 MiB is generous).
constexpr uint32_t kMaxHeaderBytes = 1u << 20;
// numpy's own limit on dimensions (NPY_MAXDIMS of NumPy 2).
constexpr size_t kMaxDims = 64;
// The most elements an array may have: the library's limit on any tensor (2^48), so that no
// element count or byte size derived from a shape can overflow.
constexpr int64_t kMaxElements = int64_t{1} << 48;

// Header text for a message: non-printable bytes as '?', at most 200 characters.
std::string printable(const std::string& s) {
  std::string out = s.substr(0, 200);
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return s.size() > out.size() ? out + "..." : out;
}

// A shape tuple: "()", "(a,)", "(a, b)", "(a, b,)" with decimal entries, at most kMaxDims of
// them, whose non-zero entries multiply to at most 2^48; a message says what is wrong otherwise.
bool parse_shape(const std::string& text, std::vector<int64_t>* shape, int64_t* elems,
                 std::string* what) {
  shape->clear();
  *elems = 1;
  const size_t n = text.size();
  if (n < 2 || text.front() != '(' || text.back() != ')') {
    *what = "malformed shape " + printable(text);
    return false;
  }
  size_t p = 1;
  const size_t end = n - 1;
  auto skip_spaces = [&] {
    while (p < end && text[p] == ' ') ++p;
  };
  skip_spaces();
  while (p < end) {
    if (text[p] < '0' || text[p] > '9') {
      *what = "malformed shape " + printable(text) + " (entries are non-negative integers)";
      return false;
    }
    int64_t v = 0;
    while (p < end && text[p] >= '0' && text[p] <= '9') {
      v = v * 10 + (text[p] - '0');
      if (v > kMaxElements) {
        *what = "shape " + printable(text) + " has a dimension beyond 2^48";
        return false;
      }
      ++p;
    }
    if (shape->size() == kMaxDims) {
      *what =
          "shape " + printable(text) + " has more than " + std::to_string(kMaxDims) + " dimensions";
      return false;
    }
    shape->push_back(v);
    skip_spaces();
    if (p < end) {
      if (text[p] != ',') {
        *what = "malformed shape " + printable(text);
        return false;
      }
      ++p;
      skip_spaces();
    }
  }
  // The product of the non-zero entries is bounded too, so that no partial product of the
  // entries (B * S * H of an empty [B, S, H, 0], say) can overflow in the code that uses them.
  int64_t product = 1;
  bool empty = false;
  for (int64_t d : *shape) {
    empty = empty || d == 0;
    if (d != 0 && (__builtin_mul_overflow(product, d, &product) || product > kMaxElements)) {
      *what = "shape " + printable(text) +
              " is too large (its non-zero dimensions multiply to more than 2^48)";
      return false;
    }
  }
  *elems = empty ? 0 : product;
  return true;
}

}  // namespace

int64_t Array::size() const {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d == 0) return 0;
    n *= d;  // read() bounds the product of the non-zero entries by 2^48
  }
  return n;
}

std::string Array::shape_string() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

bool read(const std::string& path, Array* out, std::string* err) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return fail(err, path, std::string("cannot open: ") + std::strerror(errno));
  // The header is checked against the file's size before anything it declares is allocated.
  int64_t file_size = -1;
  if (std::fseek(f.get(), 0, SEEK_END) == 0) file_size = std::ftell(f.get());
  if (file_size < 0 || std::fseek(f.get(), 0, SEEK_SET) != 0) {
    return fail(err, path, "cannot determine the file's size (not a regular file?)");
  }
  unsigned char pre[12];
  if (std::fread(pre, 1, 8, f.get()) != 8 || std::memcmp(pre, "\x93NUMPY", 6) != 0) {
    return fail(err, path, "not a .npy file (bad magic)");
  }
  const int major = pre[6];
  if (major != 1 && major != 2 && major != 3) {
    return fail(err, path, "unsupported .npy version " + std::to_string(major));
  }
  // Version 1 stores the header length in 2 bytes, versions 2 and 3 in 4.
  const int len_bytes = major == 1 ? 2 : 4;
  if (std::fread(pre + 8, 1, len_bytes, f.get()) != static_cast<size_t>(len_bytes)) {
    return fail(err, path, "truncated header");
  }
  uint32_t hlen = 0;
  for (int i = len_bytes - 1; i >= 0; --i) hlen = (hlen << 8) | pre[8 + i];
  const int64_t data_offset = 8 + len_bytes + static_cast<int64_t>(hlen);
  if (data_offset > file_size) {
    return fail(err, path,
                "truncated header (" + std::to_string(hlen) + " bytes declared, the file has " +
                    std::to_string(file_size) + " bytes)");
  }
  if (hlen > kMaxHeaderBytes) return fail(err, path, "header too long");
  std::string h(hlen, '\0');
  if (hlen > 0 && std::fread(&h[0], 1, hlen, f.get()) != hlen) {
    return fail(err, path, "truncated header");
  }
  std::string descr, order, shape_text;
  if (!dict_value(h, "descr", &descr) || !dict_value(h, "fortran_order", &order) ||
      !dict_value(h, "shape", &shape_text)) {
    return fail(err, path, "malformed header: " + printable(h));
  }
  Array a;
  if (descr == "'<f4'") {
    a.kind = Kind::kF32;
  } else if (descr == "'<f2'") {
    a.kind = Kind::kF16;
  } else if (descr == "'<i4'") {
    a.kind = Kind::kI32;
  } else if (descr == "'<i8'") {
    a.kind = Kind::kI64;
  } else {
    return fail(err, path,
                "unsupported dtype " + printable(descr) +
                    " (supported: little-endian float32, float16, int32, int64)");
  }
  if (order != "False") return fail(err, path, "Fortran-order arrays are not supported");
  int64_t elems = 0;
  std::string what;
  if (!parse_shape(shape_text, &a.shape, &elems, &what)) return fail(err, path, what);
  // elems <= 2^48 and items <= 8 bytes: no overflow.
  const int64_t bytes = elems * static_cast<int64_t>(item_size(a.kind));
  const int64_t have = file_size - data_offset;
  if (have != bytes) {
    return fail(err, path,
                std::string("file is ") + (have < bytes ? "shorter" : "longer") +
                    " than its shape " + a.shape_string() + " requires (" + std::to_string(bytes) +
                    " bytes of data, the file has " + std::to_string(have) + ")");
  }
  try {
    a.data.resize(static_cast<size_t>(bytes));
  } catch (const std::exception&) {  // bad_alloc, length_error: a file too large for memory
    return fail(err, path, "cannot allocate " + std::to_string(bytes) + " bytes for its data");
  }
  if (bytes > 0 && std::fread(a.data.data(), 1, a.data.size(), f.get()) != a.data.size()) {
    return fail(err, path, "read error (file changed while reading?)");
  }
  *out = std::move(a);
  return true;
}

bool to_float(const Array& a, std::vector<float>* out, std::string* err) {
  const int64_t n = a.size();
  out->resize(static_cast<size_t>(n));
  if (a.kind == Kind::kF32) {
    if (n > 0) std::memcpy(out->data(), a.data.data(), static_cast<size_t>(n) * 4);
  } else if (a.kind == Kind::kF16) {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, &a.data[static_cast<size_t>(i) * 2], 2);
      (*out)[i] = host::f16_to_float(h);
    }
  } else {
    *err = "expected a float32 or float16 array";
    return false;
  }
  return true;
}

bool to_int64(const Array& a, std::vector<int64_t>* out, std::string* err) {
  const int64_t n = a.size();
  out->resize(static_cast<size_t>(n));
  if (a.kind == Kind::kI64) {
    if (n > 0) std::memcpy(out->data(), a.data.data(), static_cast<size_t>(n) * 8);
  } else if (a.kind == Kind::kI32) {
    for (int64_t i = 0; i < n; ++i) {
      int32_t v;
      std::memcpy(&v, &a.data[static_cast<size_t>(i) * 4], 4);
      (*out)[i] = v;
    }
  } else {
    *err = "expected an int32 or int64 array";
    return false;
  }
  return true;
}

bool write_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data,
               std::string* err) {
  std::string dims;
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dims +=
        std::to_string(shape[i]) + (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
    n *= shape[i];
  }
  std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Pad with spaces so that the data starts on a 64-byte boundary; end with a newline.
  const size_t total = 10 + h.size() + 1;
  h.append((64 - total % 64) % 64, ' ');
  h += '\n';
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!f) return fail(err, path, std::string("cannot create: ") + std::strerror(errno));
  const unsigned char pre[10] = {0x93,
                                 'N',
                                 'U',
                                 'M',
                                 'P',
                                 'Y',
                                 1,
                                 0,
                                 static_cast<unsigned char>(h.size() & 0xff),
                                 static_cast<unsigned char>(h.size() >> 8)};
  bool ok = std::fwrite(pre, 1, 10, f.get()) == 10 &&
            std::fwrite(h.data(), 1, h.size(), f.get()) == h.size();
  if (ok && n > 0)
    ok = std::fwrite(data, 4, static_cast<size_t>(n), f.get()) == static_cast<size_t>(n);
  if (!ok) return fail(err, path, "write failed");
  return true;
}

}  // namespace npy
}  // namespace ringattn
