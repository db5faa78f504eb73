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

}  // namespace

int64_t Array::size() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
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
  unsigned char pre[8];
  if (std::fread(pre, 1, 8, f.get()) != 8 || std::memcmp(pre, "\x93NUMPY", 6) != 0) {
    return fail(err, path, "not a .npy file (bad magic)");
  }
  const int major = pre[6];
  uint32_t hlen = 0;
  if (major == 1) {
    unsigned char b[2];
    if (std::fread(b, 1, 2, f.get()) != 2) return fail(err, path, "truncated header");
    hlen = b[0] | (b[1] << 8);
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    if (std::fread(b, 1, 4, f.get()) != 4) return fail(err, path, "truncated header");
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  } else {
    return fail(err, path, "unsupported .npy version " + std::to_string(major));
  }
  if (hlen > (1u << 20)) return fail(err, path, "header too long");
  std::string h(hlen, '\0');
  if (std::fread(&h[0], 1, hlen, f.get()) != hlen) return fail(err, path, "truncated header");
  std::string descr, order, shape;
  if (!dict_value(h, "descr", &descr) || !dict_value(h, "fortran_order", &order) ||
      !dict_value(h, "shape", &shape)) {
    return fail(err, path, "malformed header: " + h);
  }
  if (descr == "'<f4'") {
    out->kind = Kind::kF32;
  } else if (descr == "'<f2'") {
    out->kind = Kind::kF16;
  } else if (descr == "'<i4'") {
    out->kind = Kind::kI32;
  } else if (descr == "'<i8'") {
    out->kind = Kind::kI64;
  } else {
    return fail(err, path,
                "unsupported dtype " + descr +
                    " (supported: little-endian float32, float16, int32, int64)");
  }
  if (order != "False") return fail(err, path, "Fortran-order arrays are not supported");
  // shape: "(a, b, c)" or "(a,)" or "()".
  out->shape.clear();
  if (shape.size() < 2 || shape.front() != '(' || shape.back() != ')') {
    return fail(err, path, "malformed shape " + shape);
  }
  std::string inner = shape.substr(1, shape.size() - 2);
  size_t p = 0;
  while (p < inner.size()) {
    while (p < inner.size() && (inner[p] == ' ' || inner[p] == ',')) ++p;
    if (p >= inner.size()) break;
    size_t e = p;
    while (e < inner.size() && inner[e] >= '0' && inner[e] <= '9') ++e;
    if (e == p) return fail(err, path, "malformed shape " + shape);
    out->shape.push_back(std::stoll(inner.substr(p, e - p)));
    p = e;
  }
  const size_t bytes = static_cast<size_t>(out->size()) * item_size(out->kind);
  out->data.resize(bytes);
  if (bytes > 0 && std::fread(out->data.data(), 1, bytes, f.get()) != bytes) {
    return fail(err, path, "file is shorter than its shape " + out->shape_string() + " requires");
  }
  unsigned char extra;
  if (std::fread(&extra, 1, 1, f.get()) == 1) {
    return fail(err, path, "file is longer than its shape " + out->shape_string() + " requires");
  }
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
