// The .npy reader of the tools (examples/npy.cpp): a file whose header lies (a shape larger than
// the file, entries that overflow, text where numbers belong, a truncated file) is refused with a
// message naming the file, before anything it declares is allocated, and nothing throws.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "npy.h"

namespace ringattn {
namespace {

namespace fs = std::filesystem;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif

// While alive, the process may map at most 1 GiB more than it has now: a reader that allocated
// what a lying header declares (16 GiB and more below) gets std::bad_alloc, which fails the test,
// instead of zero-filling the machine's memory. Not under AddressSanitizer, whose allocator
// reserves its address space up front and cannot live under such a limit.
class AddressSpaceLimit {
 public:
  AddressSpaceLimit() {
    if (kAsan || getrlimit(RLIMIT_AS, &saved_) != 0) return;
    std::ifstream statm("/proc/self/statm");
    unsigned long long pages = 0;
    if (!(statm >> pages)) return;
    rlimit lim = saved_;
    lim.rlim_cur =
        static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGESIZE)) + (rlim_t{1} << 30);
    if (saved_.rlim_cur != RLIM_INFINITY && saved_.rlim_cur < lim.rlim_cur) return;
    active_ = setrlimit(RLIMIT_AS, &lim) == 0;
  }
  ~AddressSpaceLimit() {
    if (active_) setrlimit(RLIMIT_AS, &saved_);
  }

 private:
  rlimit saved_{};
  bool active_ = false;
};

class Npy : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ringattn_npy_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A file of `header` (the dict, padded and ended with '\n' as numpy does) in format `version`,
  // followed by `data_bytes` bytes.
  std::string write(const std::string& name, const std::string& dict, size_t data_bytes,
                    int version = 1) {
    const size_t pre = version == 1 ? 10 : 12;
    std::string h = dict;
    h.append((64 - (pre + h.size() + 1) % 64) % 64, ' ');
    h += '\n';
    std::string bytes = std::string("\x93NUMPY", 6) + static_cast<char>(version) + '\0';
    for (size_t i = 0; i < pre - 8; ++i) bytes += static_cast<char>((h.size() >> (8 * i)) & 0xff);
    bytes += h;
    bytes.append(data_bytes, '\x01');
    return write_raw(name, bytes);
  }
  std::string write_shape(const std::string& name, const std::string& shape, size_t data_bytes,
                          const std::string& descr = "<f4") {
    return write(name,
                 "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }",
                 data_bytes);
  }
  std::string write_raw(const std::string& name, const std::string& bytes) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p.string();
  }

  // read() refuses the file with a message naming it and containing `words`; *out untouched.
  void expect_refused(const std::string& path, const std::string& words) {
    SCOPED_TRACE(path);
    npy::Array a;
    a.shape = {7};
    std::string err;
    bool ok = true;
    {
      AddressSpaceLimit limit;
      EXPECT_NO_THROW(ok = npy::read(path, &a, &err));
    }
    EXPECT_FALSE(ok);
    EXPECT_EQ(err.rfind(path + ": ", 0), 0u) << "message: " << err;
    EXPECT_NE(err.find(words), std::string::npos) << "message: " << err;
    EXPECT_EQ(a.shape, std::vector<int64_t>{7}) << "a failed read changed its output";
  }

  fs::path dir_;
};

TEST_F(Npy, WrittenArraysReadBack) {
  const std::vector<float> v = {1.5f, -2.0f, 0.25f, 3.0f, 4.0f, 5.0f};
  std::string err;
  const std::string p = (dir_ / "a.npy").string();
  ASSERT_TRUE(npy::write_f32(p, {2, 3}, v.data(), &err)) << err;
  npy::Array a;
  ASSERT_TRUE(npy::read(p, &a, &err)) << err;
  EXPECT_EQ(a.kind, npy::Kind::kF32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.size(), 6);
  std::vector<float> f;
  ASSERT_TRUE(npy::to_float(a, &f, &err)) << err;
  EXPECT_EQ(f, v);
}

TEST_F(Npy, HeaderVariantsThatNumpyWritesAreAccepted) {
  struct Case {
    std::string shape;
    std::vector<int64_t> dims;
  } cases[] = {{"()", {}},         {"(3,)", {3}}, {"(2, 3)", {2, 3}},   {"(2,3,)", {2, 3}},
               {"(0, 5)", {0, 5}}, {"(4)", {4}},  {"( 2 , 1 )", {2, 1}}};
  for (const Case& c : cases) {
    int64_t n = 1;
    for (int64_t d : c.dims) n *= d;
    for (int version : {1, 2, 3}) {
      const std::string p =
          write("v.npy", "{'descr': '<i4', 'fortran_order': False, 'shape': " + c.shape + ", }",
                static_cast<size_t>(n) * 4, version);
      npy::Array a;
      std::string err;
      ASSERT_TRUE(npy::read(p, &a, &err)) << c.shape << " v" << version << ": " << err;
      EXPECT_EQ(a.shape, c.dims) << c.shape;
      EXPECT_EQ(a.size(), n);
      std::vector<int64_t> ints;
      ASSERT_TRUE(npy::to_int64(a, &ints, &err)) << err;
      for (int64_t x : ints) EXPECT_EQ(x, 0x01010101);
    }
  }
}

// The shape of the ringattn_run crash report: 16 GiB declared, a few bytes present.
TEST_F(Npy, ShapeLargerThanTheFileIsRefusedBeforeAllocating) {
  expect_refused(write_shape("huge.npy", "(1, 4294967296)", 64), "shorter than its shape");
  expect_refused(write_shape("big.npy", "(65536, 65536, 16)", 0), "shorter than its shape");
  expect_refused(write_shape("short.npy", "(1000,)", 40), "shorter than its shape [1000]");
  expect_refused(write_shape("f16.npy", "(3,)", 5, "<f2"), "shorter than its shape");
  expect_refused(write_shape("long.npy", "(10,)", 44), "longer than its shape [10]");
}

TEST_F(Npy, ShapesWhoseProductOverflowsAreRefused) {
  // 2^64 and 2^69 elements wrap to 0 in 64 bits: an empty array with a huge shape.
  expect_refused(write_shape("wrap0.npy", "(4294967296, 4294967296)", 0), "2^48");
  expect_refused(write_shape("wrap1.npy", "(4294967296, 4294967296, 1, 32)", 0), "2^48");
  // Beyond the library's 2^48 elements, though it fits in 64 bits.
  expect_refused(write_shape("over48.npy", "(16777216, 16777217)", 0), "2^48");
  // Empty, yet B * S of an empty [B, S, H, 0] would still overflow.
  expect_refused(write_shape("emptyhuge.npy", "(4294967296, 4294967296, 0)", 0), "2^48");
  expect_refused(write_shape("dim.npy", "(281474976710657,)", 0), "beyond 2^48");
}

TEST_F(Npy, NonNumericAndOutOfRangeShapeEntriesAreRefused) {
  expect_refused(write_shape("range.npy", "(99999999999999999999999,)", 0), "beyond 2^48");
  expect_refused(write_shape("neg.npy", "(-1, 3)", 0), "malformed shape");
  expect_refused(write_shape("text.npy", "('a', 3)", 0), "malformed shape");
  expect_refused(write_shape("float.npy", "(3.5,)", 0), "malformed shape");
  expect_refused(write_shape("space.npy", "(3 4)", 0), "malformed shape");
  expect_refused(write_shape("commas.npy", "(3,,4)", 0), "malformed shape");
  expect_refused(write_shape("lonecomma.npy", "(,)", 0), "malformed shape");
  expect_refused(write_shape("open.npy", "(3, 4", 0), "malformed");
  std::string many = "(";
  for (int i = 0; i < 65; ++i) many += "1, ";
  expect_refused(write_shape("dims.npy", many + ")", 4), "more than 64 dimensions");
}

TEST_F(Npy, TruncatedAndMalformedFilesAreRefused) {
  const std::string good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  expect_refused(write_raw("empty.npy", ""), "not a .npy file");
  expect_refused(write_raw("magic.npy", "\x93NUMPX\x01\x00\x10\x00"), "not a .npy file");
  expect_refused(write_raw("pre.npy", std::string("\x93NUMPY\x02\x00\x10", 9)), "truncated header");
  expect_refused(write_raw("pre2.npy", std::string("\x93NUMPY\x02\x00\x10\x00", 10)),
                 "truncated header");
  expect_refused(write_raw("version.npy", std::string("\x93NUMPY\x07\x00\x00\x00", 10)),
                 "unsupported .npy version 7");
  // The header claims 4 GiB (version 2) or 64 KiB (version 1) and the file ends.
  expect_refused(write_raw("hlen.npy", std::string("\x93NUMPY\x02\x00\xff\xff\xff\xff{}", 14)),
                 "truncated header");
  expect_refused(write_raw("hlen1.npy", std::string("\x93NUMPY\x01\x00\xff\xff{'descr'", 18)),
                 "truncated header");
  std::string whole = std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(good.size()) + '\0' +
                      good + std::string(8, '\0');
  expect_refused(write_raw("cut.npy", whole.substr(0, 20)), "truncated header");
  expect_refused(write_raw("data.npy", whole.substr(0, whole.size() - 1)), "shorter");
  expect_refused(write("keys.npy", "{'descr': '<f4', 'shape': (2,), }", 8), "malformed header");
  expect_refused(write("f8.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16),
                 "unsupported dtype '<f8'");
  expect_refused(write("be.npy", "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8),
                 "unsupported dtype");
  expect_refused(
      write("fortran.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", 8),
      "Fortran-order");
  expect_refused((dir_ / "missing.npy").string(), "cannot open");
}

TEST_F(Npy, ConversionsCheckTheKind) {
  const std::string p = write_shape("i.npy", "(2,)", 8, "<i4");
  npy::Array a;
  std::string err;
  ASSERT_TRUE(npy::read(p, &a, &err)) << err;
  std::vector<float> f;
  EXPECT_FALSE(npy::to_float(a, &f, &err));
  const std::string q = write_shape("h.npy", "(3,)", 6, "<f2");
  ASSERT_TRUE(npy::read(q, &a, &err)) << err;
  ASSERT_TRUE(npy::to_float(a, &f, &err)) << err;
  EXPECT_EQ(f.size(), 3u);
  std::vector<int64_t> ints;
  EXPECT_FALSE(npy::to_int64(a, &ints, &err));
}

}  // namespace
}  // namespace ringattn
