// ringattn_run end to end: global .npy inputs in, `mpirun -np P ringattn_run` on them, global
// .npy outputs checked against the float64 reference; bad inputs exit non-zero with a message
// on stderr, never hang. Runs as a plain process that launches mpirun itself.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "npy.h"
#include "reference.h"

namespace ringattn {
namespace test {
namespace {

namespace fs = std::filesystem;

struct RunResult {
  int exit_code;
  std::string output;  // stdout and stderr
};

RunResult run_tool(int ranks, const std::string& args) {
  const std::string log = (fs::temp_directory_path() / "ringattn_run_test.log").string();
  const std::string cmd = std::string("timeout 120 ") + RINGATTN_MPIEXEC + " -np " +
                          std::to_string(ranks) + " --oversubscribe " + RINGATTN_RUN_TOOL + " " +
                          args + " > " + log + " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  return RunResult{WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, ss.str()};
}

void write(const fs::path& p, const std::vector<int64_t>& shape, const std::vector<double>& v) {
  std::vector<float> f(v.begin(), v.end());
  std::string err;
  ASSERT_TRUE(npy::write_f32(p.string(), shape, f.data(), &err)) << err;
}

void write_i32(const fs::path& p, const std::vector<int64_t>& values) {
  // A hand-made int32 .npy (version 1 header), as numpy writes it.
  std::string h = "{'descr': '<i4', 'fortran_order': False, 'shape': (" +
                  std::to_string(values.size()) + ",), }";
  h.append((64 - (10 + h.size() + 1) % 64) % 64, ' ');
  h += '\n';
  std::ofstream o(p, std::ios::binary);
  const char pre[10] = {'\x93',
                        'N',
                        'U',
                        'M',
                        'P',
                        'Y',
                        1,
                        0,
                        static_cast<char>(h.size() & 0xff),
                        static_cast<char>(h.size() >> 8)};
  o.write(pre, 10);
  o.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (int64_t x : values) {
    const int32_t v = static_cast<int32_t>(x);
    o.write(reinterpret_cast<const char*>(&v), 4);
  }
}

// A float32 .npy whose header declares `shape` (any text) and whose data are `data_bytes` bytes.
void write_header(const fs::path& p, const std::string& shape, size_t data_bytes) {
  std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  h.append((64 - (10 + h.size() + 1) % 64) % 64, ' ');
  h += '\n';
  std::ofstream o(p, std::ios::binary);
  o.write("\x93NUMPY\x01\x00", 8);
  o.put(static_cast<char>(h.size() & 0xff)).put(static_cast<char>(h.size() >> 8));
  o.write(h.data(), static_cast<std::streamsize>(h.size()));
  o << std::string(data_bytes, '\0');
}

std::vector<double> read(const fs::path& p, std::vector<int64_t>* shape) {
  npy::Array a;
  std::string err;
  EXPECT_TRUE(npy::read(p.string(), &a, &err)) << err;
  std::vector<float> f;
  npy::to_float(a, &f, &err);
  *shape = a.shape;
  return std::vector<double>(f.begin(), f.end());
}

class RingRun : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ringattn_run_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// Fixed length, causal, fwd+bwd, fp16 cast: [B,S,H,D] in, everything checked.
TEST_F(RingRun, FixedLengthForwardAndBackwardMatchTheReference) {
  const int64_t B = 2, S = 45, Hq = 4, Hkv = 2, D = 32;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const DType t = kF16;
  auto q = random_values(B * S * Hq * D, seed, t), k = random_values(B * S * Hkv * D, seed + 1, t),
       v = random_values(B * S * Hkv * D, seed + 2, t),
       g = random_values(B * S * Hq * D, seed + 3, t);
  write(dir_ / "q.npy", {B, S, Hq, D}, q);
  write(dir_ / "k.npy", {B, S, Hkv, D}, k);
  write(dir_ / "v.npy", {B, S, Hkv, D}, v);
  write(dir_ / "do.npy", {B, S, Hq, D}, g);
  for (int ranks : {1, 3}) {
    const RunResult r = run_tool(
        ranks, "--q " + (dir_ / "q.npy").string() + " --k " + (dir_ / "k.npy").string() + " --v " +
                   (dir_ / "v.npy").string() + " --do " + (dir_ / "do.npy").string() +
                   " --causal --scheme striped --dtype f16 --out " + (dir_ / "out").string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    AttnCase c;
    c.shape = AttnShape{B, S, S, Hq, Hkv, D};
    c.scale = 1.0 / std::sqrt(static_cast<double>(D));
    c.mask = make_mask_spec(true, -1, -1);
    c.qpos = c.kpos = whole_sequence(S);
    const FwdResult ref = reference_forward(c, q, k, v), naive = naive_forward(c, q, k, v, t);
    const BwdResult rb = reference_backward(c, q, k, v, g), nb = naive_backward(c, q, k, v, g, t);
    std::vector<int64_t> shape;
    EXPECT_TRUE(within_2x_naive("O", read(dir_ / "out" / "o.npy", &shape), ref.o, naive.o, t));
    EXPECT_EQ(shape, (std::vector<int64_t>{B, S, Hq, D}));
    EXPECT_TRUE(
        within_2x_naive("LSE", read(dir_ / "out" / "lse.npy", &shape), ref.lse, naive.lse, t));
    EXPECT_EQ(shape, (std::vector<int64_t>{B, Hq, S}));
    EXPECT_TRUE(within_2x_naive("dQ", read(dir_ / "out" / "dq.npy", &shape), rb.dq, nb.dq, t));
    EXPECT_TRUE(within_2x_naive("dK", read(dir_ / "out" / "dk.npy", &shape), rb.dk, nb.dk, t));
    EXPECT_EQ(shape, (std::vector<int64_t>{B, S, Hkv, D}));
    EXPECT_TRUE(within_2x_naive("dV", read(dir_ / "out" / "dv.npy", &shape), rb.dv, nb.dv, t));
  }
}

// Packed [T,H,D] with int32 cu_seqlens, sliding window, forward only.
TEST_F(RingRun, PackedWindowedForwardMatchesTheReference) {
  const std::vector<int64_t> cu = {0, 3, 40, 41, 70};
  const int64_t T = 70, Hq = 2, Hkv = 1, D = 40;
  const uint64_t seed = fresh_seed();
  const DType t = kF32;
  auto q = random_values(T * Hq * D, seed, t), k = random_values(T * Hkv * D, seed + 1, t),
       v = random_values(T * Hkv * D, seed + 2, t);
  write(dir_ / "q.npy", {T, Hq, D}, q);
  write(dir_ / "k.npy", {T, Hkv, D}, k);
  write(dir_ / "v.npy", {T, Hkv, D}, v);
  write_i32(dir_ / "cu.npy", cu);
  const RunResult r = run_tool(
      4, "--q " + (dir_ / "q.npy").string() + " --k " + (dir_ / "k.npy").string() + " --v " +
             (dir_ / "v.npy").string() + " --cu-seqlens " + (dir_ / "cu.npy").string() +
             " --window 5,2 --out " + (dir_ / "out").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  AttnCase c;
  c.shape = AttnShape{1, T, T, Hq, Hkv, D};
  c.scale = 1.0 / std::sqrt(static_cast<double>(D));
  c.mask = make_mask_spec(false, 5, 2);
  for (size_t b = 0; b + 1 < cu.size(); ++b) {
    for (int64_t i = 0; i < cu[b + 1] - cu[b]; ++i) {
      c.qpos.seq.push_back(static_cast<int64_t>(b));
      c.qpos.pos.push_back(i);
    }
  }
  c.kpos = c.qpos;
  const FwdResult ref = reference_forward(c, q, k, v), naive = naive_forward(c, q, k, v, t);
  std::vector<int64_t> shape;
  EXPECT_TRUE(within_2x_naive("O", read(dir_ / "out" / "o.npy", &shape), ref.o, naive.o, t));
  EXPECT_TRUE(
      within_2x_naive("LSE", read(dir_ / "out" / "lse.npy", &shape), ref.lse, naive.lse, t));
  EXPECT_EQ(shape, (std::vector<int64_t>{Hq, T}));
}

TEST_F(RingRun, BadInputsExitNonZeroWithAMessage) {
  write(dir_ / "q.npy", {1, 8, 2, 32}, std::vector<double>(8 * 2 * 32, 0.5));
  write(dir_ / "k.npy", {1, 8, 1, 32}, std::vector<double>(8 * 32, 0.5));
  write(dir_ / "kbad.npy", {1, 9, 1, 32}, std::vector<double>(9 * 32, 0.5));
  std::ofstream(dir_ / "junk.npy") << "this is not numpy";
  // Headers that lie: 2^46 elements in a 256-byte file; 2^69 elements, which wrap to 0 in 64
  // bits; an entry beyond any integer type.
  write_header(dir_ / "huge.npy", "(1, 1, 1, 70368744177664)", 256);
  write_header(dir_ / "wrap.npy", "(4294967296, 4294967296, 1, 32)", 0);
  write_header(dir_ / "range.npy", "(99999999999999999999999, 8, 1, 32)", 0);
  const std::string q = " --q " + (dir_ / "q.npy").string(),
                    k = " --k " + (dir_ / "k.npy").string(),
                    v = " --v " + (dir_ / "k.npy").string(),
                    out = " --out " + (dir_ / "o").string();
  struct Bad {
    std::string args, words;
  } cases[] = {
      {q + " --k " + (dir_ / "missing.npy").string() + v + out, "cannot open"},
      {q + " --k " + (dir_ / "junk.npy").string() + v + out, "not a .npy file"},
      {q + " --k " + (dir_ / "kbad.npy").string() + v + out, "must both be"},
      {q + " --k " + (dir_ / "huge.npy").string() + v + out,
       (dir_ / "huge.npy").string() + ": file is shorter than its shape"},
      {q + k + " --v " + (dir_ / "wrap.npy").string() + out,
       (dir_ / "wrap.npy").string() + ": shape"},
      {" --q " + (dir_ / "range.npy").string() + k + v + out,
       (dir_ / "range.npy").string() + ": shape"},
      {q + k + v + out + " --scheme spiral", "--scheme"},
      {q + k + v + out + " --dtype f64", "--dtype"},
      {q + k + v + out + " --window 3", "--window"},
      {q + k + v + " --cu-seqlens " + (dir_ / "k.npy").string() + out, "not packed"},
      {q + k + v + out + " --backend cuda", "RINGATTN_ERROR_UNSUPPORTED"},
      {q + k + v, "--out"},
  };
  for (const Bad& b : cases) {
    const RunResult r = run_tool(2, b.args);
    EXPECT_NE(r.exit_code, 0) << b.args << "\n" << r.output;
    EXPECT_NE(r.exit_code, 124) << "timed out: " << b.args;
    EXPECT_NE(r.output.find(b.words), std::string::npos) << b.args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace test
}  // namespace ringattn
