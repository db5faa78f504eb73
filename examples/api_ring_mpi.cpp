// Ring attention from C/C++ with your own MPI communicator: every rank builds the same global
// tensors (here: random), takes its zigzag shard with ringattn_shard_tensor, runs the ring
// forward on its shard, and rank 0 compares its rows with the single-process API on the whole
// sequence.
//
//   mpirun -np 4 api_ring_mpi
#include <mpi.h>
#include <ringattn/ringattn_mpi.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <ringattn/ringattn.hpp>
#include <vector>

namespace {

ringattn_tensor_t tensor(float* data, int64_t b, int64_t s, int64_t h, int64_t d) {
  return ringattn::tensor_bshd(data, RINGATTN_FLOAT32, b, s, h, d);
}

#define CHECK(call)                                                              \
  do {                                                                           \
    const ringattn_status_t st_ = (call);                                        \
    if (st_ != RINGATTN_SUCCESS) {                                               \
      std::fprintf(stderr, "%s failed: %s\n", #call, ringattn_get_last_error()); \
      MPI_Abort(MPI_COMM_WORLD, 1);                                              \
    }                                                                            \
  } while (0)

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);

  const int64_t B = 1, S = 1000, H = 4, D = 64;  // S need not divide by 2 * world
  std::vector<float> q(B * S * H * D), k(q.size()), v(q.size());
  std::mt19937 gen(42);  // the same global tensors on every rank
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (std::vector<float>* t : {&q, &k, &v}) {
    for (float& x : *t) x = u(gen);
  }

  // This rank's shard.
  const ringattn_scheme_t scheme = RINGATTN_SCHEME_ZIGZAG;
  int64_t n = 0;
  CHECK(ringattn_shard_length(scheme, S, world, rank, &n));
  std::vector<float> lq(B * n * H * D), lk(lq.size()), lv(lq.size()), lo(lq.size()),
      llse(B * H * n);
  ringattn_tensor_t gq = tensor(q.data(), B, S, H, D), gk = tensor(k.data(), B, S, H, D),
                    gv = tensor(v.data(), B, S, H, D);
  ringattn_tensor_t tq = tensor(lq.data(), B, n, H, D), tk = tensor(lk.data(), B, n, H, D),
                    tv = tensor(lv.data(), B, n, H, D), to = tensor(lo.data(), B, n, H, D);
  ringattn_tensor_t tlse = ringattn::lse_bhs(llse.data(), B, H, n);
  CHECK(ringattn_shard_tensor(&gq, &tq, scheme, NULL, 0, world, rank));
  CHECK(ringattn_shard_tensor(&gk, &tk, scheme, NULL, 0, world, rank));
  CHECK(ringattn_shard_tensor(&gv, &tv, scheme, NULL, 0, world, rank));

  // The ring: one context per communicator, reused for every call.
  ringattn_context_t ctx = NULL;
  CHECK(ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CPU, NULL, &ctx));
  ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;
  params.causal = 1;
  params.scheme = scheme;
  CHECK(ringattn_ring_forward(ctx, &tq, &tk, &tv, &to, &tlse, &params, NULL));
  CHECK(ringattn_context_destroy(ctx));

  // Every rank checks its rows against the single-process result on the whole sequence.
  std::vector<float> o(q.size());
  ringattn_tensor_t go = tensor(o.data(), B, S, H, D);
  ringattn_attn_params_t whole = RINGATTN_ATTN_PARAMS_INIT;
  whole.causal = 1;
  CHECK(ringattn_attention_forward(&gq, &gk, &gv, &go, NULL, &whole, RINGATTN_BACKEND_CPU, NULL));
  std::vector<int64_t> pos(static_cast<size_t>(n));
  CHECK(ringattn_shard_positions(scheme, S, world, rank, pos.data(), n));
  double err = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t x = 0; x < H * D; ++x) {
      err = std::fmax(err, std::fabs(lo[i * H * D + x] - o[pos[i] * H * D + x]));
    }
  }
  double worst = 0.0;
  MPI_Allreduce(&err, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0) {
    std::printf("ring of %d ranks vs one process: max |difference| = %.3g\n", world, worst);
  }
  MPI_Finalize();
  return worst < 1e-4 ? 0 : 1;
}
