// The tools when a peer stops: `mpirun -np 3` of ringattn_bench or ringattn_run with one rank
// stopped (SIGSTOP) mid-run. Every surviving rank must print the timeout (the library's message,
// or the tool's own bounded collective's when the stop came between two calls) and the job must
// exit non-zero within RINGATTN_TIMEOUT_MS + 10 s, never hang. Runs as a plain process that
// launches mpirun itself.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "npy.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int kTimeoutMs = 3000;

// The pids of the running processes named `name` (the ranks; mpirun has another name).
std::vector<pid_t> pids_of(const std::string& name) {
  std::vector<pid_t> out;
  FILE* p = popen(("pgrep -x " + name.substr(0, 15)).c_str(), "r");
  if (p == nullptr) return out;
  long v = 0;
  while (std::fscanf(p, "%ld", &v) == 1) out.push_back(static_cast<pid_t>(v));
  pclose(p);
  return out;
}

struct Outcome {
  int exit_code = -1;
  double seconds_after_stop = -1;  // until the job ended
  std::string output;
  bool stopped = false;
};

// Runs `mpirun -np 3 tool args` in the background, stops its highest-pid rank after
// `stop_after_ms`, and waits (at most 60 s) for the job to end.
Outcome run_and_stop_one(const std::string& tool, const std::string& args, int stop_after_ms) {
  const fs::path log =
      fs::temp_directory_path() / ("ringattn_tools_faults_" + std::to_string(::getpid()) + ".log");
  const std::string cmd = "exec timeout -k 5 60 " + std::string(RINGATTN_MPIEXEC) +
                          " -np 3 --oversubscribe " + tool + " " + args + " > " + log.string() +
                          " 2>&1";
  Outcome o;
  const pid_t child = fork();
  if (child == 0) {
    setenv("RINGATTN_TIMEOUT_MS", std::to_string(kTimeoutMs).c_str(), 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(stop_after_ms));
  const std::string name = fs::path(tool).filename().string();
  std::vector<pid_t> ranks = pids_of(name);
  pid_t victim = -1;
  if (ranks.size() == 3) {
    victim = ranks.back();
    o.stopped = kill(victim, SIGSTOP) == 0;
  }
  const Clock::time_point stop = Clock::now();
  int status = 0;
  for (;;) {
    const pid_t w = waitpid(child, &status, WNOHANG);
    if (w == child) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  o.seconds_after_stop = std::chrono::duration<double>(Clock::now() - stop).count();
  o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (victim > 0) {  // never leave a stopped rank behind
    kill(victim, SIGCONT);
    kill(victim, SIGKILL);
  }
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  o.output = ss.str();
  fs::remove(log);
  return o;
}

void expect_timeout_reported(const Outcome& o, const std::string& tool) {
  ASSERT_TRUE(o.stopped) << "could not find and stop a rank of " << tool << "\n" << o.output;
  EXPECT_NE(o.exit_code, 0) << o.output;
  EXPECT_NE(o.exit_code, 124) << "the job hung until the test's own timeout\n" << o.output;
  EXPECT_LT(o.seconds_after_stop, kTimeoutMs / 1000.0 + 10.0) << o.output;
  // The library names what timed out and the peer; the tool's bounded collectives name
  // themselves.
  const bool library = o.output.find("RINGATTN_ERROR_TIMEOUT") != std::string::npos &&
                       o.output.find("did not finish within") != std::string::npos;
  const bool collective = o.output.find("did not join") != std::string::npos;
  EXPECT_TRUE(library || collective) << o.output;
  EXPECT_NE(o.output.find(tool + ": rank "), std::string::npos) << o.output;
  std::printf("%s: the job ended %.1f s after a rank was stopped (RINGATTN_TIMEOUT_MS=%d)\n",
              tool.c_str(), o.seconds_after_stop, kTimeoutMs);
}

TEST(ToolsFaults, BenchWithAStoppedRankReportsTheTimeoutAndExits) {
  const Outcome o = run_and_stop_one(RINGATTN_BENCH_TOOL,
                                     "-b 3072 -e 3072 -H 4 -d 64 --dtype bf16 --causal --mode "
                                     "both -n 100000 -w 0 -c 0",
                                     2500);
  expect_timeout_reported(o, "ringattn_bench");
}

TEST(ToolsFaults, RunWithAStoppedRankReportsTheTimeoutAndExits) {
  const fs::path dir =
      fs::temp_directory_path() / ("ringattn_tools_faults_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const int64_t S = 24576, H = 4, D = 64;  // a ring of several seconds on two cores
  std::vector<float> x(static_cast<size_t>(S * H * D));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7919) % 1000) / 1000.f;
  std::string err;
  for (const char* n : {"q", "k", "v", "do"}) {
    ASSERT_TRUE(ringattn::npy::write_f32((dir / (std::string(n) + ".npy")).string(), {1, S, H, D},
                                         x.data(), &err))
        << err;
  }
  const std::string args = "--q " + (dir / "q.npy").string() + " --k " + (dir / "k.npy").string() +
                           " --v " + (dir / "v.npy").string() + " --do " +
                           (dir / "do.npy").string() + " --causal --out " + (dir / "out").string();
  const Outcome o = run_and_stop_one(RINGATTN_RUN_TOOL, args, 1500);
  fs::remove_all(dir);
  expect_timeout_reported(o, "ringattn_run");
}

}  // namespace
