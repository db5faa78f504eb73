// Fuzz target: the tools' .npy reader (examples/npy.cpp) on arbitrary file contents. The input
// becomes a file in memory (memfd), read through its /proc/self/fd path as ringattn_run reads
// its inputs. Oracles: read() never throws and never allocates more than the file holds
// (libFuzzer's -rss_limit_mb and -malloc_limit_mb catch that); a failure names the file; an
// array it returns is consistent (element count within 2^48, data of exactly that many items),
// converts, and survives a write_f32 / read round trip bit for bit.
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "npy.h"

namespace {

// A memory file rewritten for every input; `path` opens it anew.
struct MemFile {
  explicit MemFile(const char* name) {
    fd = memfd_create(name, 0);
    if (fd < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path = "/proc/self/fd/" + std::to_string(fd);
  }
  void set(const uint8_t* data, size_t size) const {
    if (ftruncate(fd, 0) != 0 ||
        (size > 0 && pwrite(fd, data, size, 0) != static_cast<ssize_t>(size))) {
      std::perror("memfd write");
      std::abort();
    }
  }
  int fd;
  std::string path;
};

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz oracle failed: %s\n", what.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ringattn;
  static const MemFile in("npy_in"), out("npy_out");
  in.set(data, size);
  npy::Array a;
  std::string err;
  if (!npy::read(in.path, &a, &err)) {
    if (err.rfind(in.path + ": ", 0) != 0) fail("message does not name the file: " + err);
    return 0;
  }
  const int64_t n = a.size();
  const size_t item = a.kind == npy::Kind::kF16 ? 2 : a.kind == npy::Kind::kI64 ? 8 : 4;
  if (n < 0 || n > (int64_t{1} << 48) || a.data.size() != static_cast<size_t>(n) * item) {
    fail("inconsistent array " + a.shape_string() + " with " + std::to_string(a.data.size()) +
         " bytes");
  }
  if (a.kind == npy::Kind::kI32 || a.kind == npy::Kind::kI64) {
    std::vector<int64_t> v;
    if (!npy::to_int64(a, &v, &err) || v.size() != static_cast<size_t>(n)) fail("to_int64");
    return 0;
  }
  std::vector<float> v;
  if (!npy::to_float(a, &v, &err) || v.size() != static_cast<size_t>(n)) fail("to_float");
  if (!npy::write_f32(out.path, a.shape, v.data(), &err)) fail("write_f32: " + err);
  npy::Array b;
  if (!npy::read(out.path, &b, &err)) fail("reading back what write_f32 wrote: " + err);
  if (b.kind != npy::Kind::kF32 || b.shape != a.shape ||
      b.data.size() != v.size() * sizeof(float) ||
      (n > 0 && std::memcmp(b.data.data(), v.data(), b.data.size()) != 0)) {
    fail("round trip changed the array " + a.shape_string());
  }
  return 0;
}
