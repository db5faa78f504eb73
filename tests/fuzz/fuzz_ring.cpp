// Fuzz target: the ring calls' argument handling without MPI. The ring executor (RingContext,
// compiled in from src/) runs as rank R of a P-rank ring over a transport that stands in for
// the peers: the replaying transport answers the agreement with this rank's own fingerprint on
// every rank and finishes each exchange at once, copying what is sent into what is received
// (so AddressSanitizer checks both buffers against the sizes the executor gives); or the
// library's compute-only transport. Every check the ring makes on one rank runs for real:
// validation of the tensors and params (cu_seqlens, num_seqs, scheme, window), this rank's
// packed share, the agreement's checks of shares and lengths, the plan, the workspace, then the
// ring's steps on small problems. Oracles as for the single-process target (attn_case.h).
#include <sanitizer/asan_interface.h>
#include <stddef.h>
#include <stdint.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "attn_case.h"
#include "backend.h"
#include "compute_only_transport.h"
#include "ring_context.h"
#include "status.h"
#include "transport.h"

namespace ringattn {
namespace fuzz {
namespace {

class ReplayTransport final : public comm::Transport {
 public:
  ReplayTransport(int rank, int world) : rank_(rank), size_(world) {}

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  ringattn_status_t start_exchange(const void* send, size_t send_bytes, int dst, void* recv,
                                   size_t recv_bytes, int src, int /*tag*/,
                                   comm::Exchange* ex) override {
    if (ex->active || dst < 0 || dst >= size_ || src < 0 || src >= size_) {
      std::fprintf(stderr, "replay transport: bad exchange (active %d, dst %d, src %d of %d)\n",
                   ex->active, dst, src, size_);
      std::abort();
    }
    // The whole of both buffers must be the executor's memory, as a real transport reads and
    // writes all of them.
    if ((send_bytes > 0 && __asan_region_is_poisoned(const_cast<void*>(send), send_bytes)) ||
        (recv_bytes > 0 && __asan_region_is_poisoned(recv, recv_bytes))) {
      std::fprintf(stderr, "replay transport: exchange of %zu / %zu bytes beyond its buffers\n",
                   send_bytes, recv_bytes);
      std::abort();
    }
    const size_t n = send_bytes < recv_bytes ? send_bytes : recv_bytes;
    if (n > 0) std::memmove(recv, send, n);
    if (recv_bytes > n) std::memset(static_cast<char*>(recv) + n, 0, recv_bytes - n);
    ex->num_requests = 0;
    ex->send_peer = dst;
    ex->recv_peer = src;
    ex->active = true;
    return RINGATTN_SUCCESS;
  }
  ringattn_status_t wait(comm::Exchange* ex) override {
    ex->active = false;
    return RINGATTN_SUCCESS;
  }
  void progress(comm::Exchange* /*ex*/) override {}
  ringattn_status_t allgather_i64(const int64_t* mine, int n, int64_t* all) override {
    for (int r = 0; r < size_; ++r) std::memcpy(all + static_cast<size_t>(r) * n, mine, 8 * n);
    return RINGATTN_SUCCESS;
  }
  bool broken() const override { return false; }

 private:
  int rank_, size_;
};

}  // namespace
}  // namespace fuzz
}  // namespace ringattn

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ringattn;
  using namespace ringattn::fuzz;
  FuzzBytes in(data, size);
  AttnCase c;
  c.decode(&in, /*ring=*/true);
  Backend* cpu = nullptr;
  if (get_backend(RINGATTN_BACKEND_CPU, &cpu) != RINGATTN_SUCCESS) std::abort();
  std::unique_ptr<comm::Transport> transport;
  if (c.compute_only) {
    transport.reset(new comm::ComputeOnlyTransport(c.rank, c.world));
  } else {
    transport.reset(new ReplayTransport(c.rank, c.world));
  }
  RingContext ctx(std::move(transport), cpu, c.chunks);
  for (Op op : c.ops) {
    bool must_fail = false;
    if (!c.callable(op, &must_fail)) continue;
    AttnCase::fill_regions();
    const uint64_t before = must_fail ? 0 : c.inputs_hash(op);
    clear_error();  // as the C API does on entry
    Status st;
    if (op == kForward) {
      st = ctx.forward(c.arg(kQ), c.arg(kK), c.arg(kV), c.out(kO), c.out(kLse), c.params_arg(),
                       nullptr);
    } else {
      st = ctx.backward(c.arg(kQ), c.arg(kK), c.arg(kV), c.arg(kO), c.arg(kLse), c.arg(kDout),
                        c.out(kDq), c.out(kDk), c.out(kDv), c.params_arg(), nullptr);
    }
    c.check_after(op, st, must_fail, before);
  }
  return 0;
}
