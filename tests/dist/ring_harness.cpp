#include "ring_harness.h"

#include <cmath>
#include <sstream>

namespace ringattn {
namespace test {
namespace {

const char* scheme_name(ringattn_scheme_t s) {
  return s == RINGATTN_SCHEME_CONTIGUOUS ? "contiguous"
         : s == RINGATTN_SCHEME_ZIGZAG   ? "zigzag"
                                         : "striped";
}

ringattn_dtype_t api_dtype(DType t) {
  return t == kF16 ? RINGATTN_FLOAT16 : t == kBF16 ? RINGATTN_BFLOAT16 : RINGATTN_FLOAT32;
}

// A C descriptor with a HostTensor's layout ([B, S, H, D], or [T, H, D] when packed) over
// `data` (the tensor itself or its placed copy).
ringattn_tensor_t desc(HostTensor& t, void* data, bool packed, int64_t b, int64_t s, int64_t h,
                       int64_t d) {
  const TensorRef r = t.ref();
  ringattn_tensor_t x{};
  x.data = data;
  x.dtype = api_dtype(t.dtype());
  if (packed) {
    x.ndim = 3;
    x.shape[0] = s, x.shape[1] = h, x.shape[2] = d;
    x.strides[0] = r.stride_s, x.strides[1] = r.stride_h, x.strides[2] = 1;
  } else {
    x.ndim = 4;
    x.shape[0] = b, x.shape[1] = s, x.shape[2] = h, x.shape[3] = d;
    x.strides[0] = r.stride_b, x.strides[1] = r.stride_s, x.strides[2] = r.stride_h;
    x.strides[3] = 1;
  }
  return x;
}

ringattn_tensor_t desc_lse(HostRowStat& t, void* data, bool packed, int64_t b, int64_t h,
                           int64_t s) {
  const RowStatRef r = t.ref();
  ringattn_tensor_t x{};
  x.data = data;
  x.dtype = RINGATTN_FLOAT32;
  if (packed) {
    x.ndim = 2;
    x.shape[0] = h, x.shape[1] = s;
    x.strides[0] = r.stride_h, x.strides[1] = 1;
  } else {
    x.ndim = 3;
    x.shape[0] = b, x.shape[1] = h, x.shape[2] = s;
    x.strides[0] = r.stride_b, x.strides[1] = r.stride_h, x.strides[2] = 1;
  }
  return x;
}

std::string rank_error(MPI_Comm comm, ringattn_status_t st) {
  return "rank " + std::to_string(world_rank(comm)) + ": " + ringattn_status_string(st) + " " +
         ringattn_get_last_error();
}

// Every rank learns whether all succeeded, and rank 0 learns the first failure's message.
// Every rank learns whether all succeeded; rank 0 keeps the first failure's message.
void agree_ok(MPI_Comm comm, ringattn_status_t st, RingResult* r, const char* what = "") {
  const bool ok = st == RINGATTN_SUCCESS;
  std::string mine = ok ? std::string() : what + rank_error(comm, st);
  auto msgs = gather_to_root(std::vector<double>(mine.begin(), mine.end()), comm);
  if (world_rank(comm) == 0 && r->ok) {
    for (const auto& m : msgs) {
      if (!m.empty()) {
        r->error = std::string(m.begin(), m.end());
        break;
      }
    }
  }
  r->ok = all_ranks(ok, comm) && r->ok;
}

AttnCase global_case(const RingCase& c) {
  AttnCase g;
  const int64_t rows = c.layout.rows();
  g.shape = AttnShape{c.layout.packed ? 1 : c.layout.batch, rows, rows, c.hq, c.hkv, c.d};
  g.scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  g.mask = make_mask_spec(c.causal, c.window_left, c.window_right);
  g.qpos = g.kpos = global_positions(c.layout);
  return g;
}

}  // namespace

std::string describe(const RingCase& c) {
  std::ostringstream s;
  s << c.name << ": " << scheme_name(c.scheme) << " P=" << world_size() << " ";
  if (c.layout.packed) {
    s << "packed T=" << c.layout.rows() << " seqs=" << c.layout.num_seqs();
  } else {
    s << "B=" << c.layout.batch << " S=" << c.layout.seq;
  }
  s << " Hq=" << c.hq << " Hkv=" << c.hkv << " D=" << c.d << " " << dtype_name(c.dtype)
    << (c.causal ? " causal" : "") << " window=(" << c.window_left << "," << c.window_right << ")"
    << (c.backward ? " fwd+bwd" : " fwd")
    << (c.local_kernel == RINGATTN_LOCAL_KERNEL_CUDNN ? " cuDNN" : "");
  return s.str();
}

RingInputs make_inputs(const RingCase& c, uint64_t seed) {
  const int64_t B = c.layout.packed ? 1 : c.layout.batch, rows = c.layout.rows();
  RingInputs in;
  in.q = random_values(static_cast<size_t>(B * rows * c.hq * c.d), seed, c.dtype);
  in.k = random_values(static_cast<size_t>(B * rows * c.hkv * c.d), seed + 1, c.dtype);
  in.v = random_values(static_cast<size_t>(B * rows * c.hkv * c.d), seed + 2, c.dtype);
  if (c.backward) {
    in.dout = random_values(static_cast<size_t>(B * rows * c.hq * c.d), seed + 3, c.dtype);
  }
  return in;
}

ringattn_context_t make_context(MPI_Comm comm, int64_t timeout_ms, int32_t chunks,
                                int32_t ulysses_degree, int32_t placement) {
  ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
  opts.timeout_ms = timeout_ms;
  opts.chunks = chunks;
  opts.ulysses_degree = ulysses_degree;
  opts.placement = placement;
  ringattn_context_t ctx = nullptr;
  const ringattn_status_t st = ringattn_context_create(comm, RINGATTN_BACKEND_CPU, &opts, &ctx);
  EXPECT_EQ(st, RINGATTN_SUCCESS) << ringattn_get_last_error();
  return ctx;
}

RingResult run_ring(const RingCase& c, const RingInputs& in, ringattn_context_t ctx, MPI_Comm comm,
                    Placement* placement) {
  Placement on_host;
  Placement& where = placement != nullptr ? *placement : on_host;
  const int P = world_size(comm), me = world_rank(comm);
  const bool packed = c.layout.packed;
  const int64_t B = packed ? 1 : c.layout.batch, rows = c.layout.rows();
  const std::vector<int64_t> idx = local_rows(c.layout, c.scheme, P, me);
  const int64_t n = static_cast<int64_t>(idx.size());
  bool placed = true;
  auto place = [&](HostTensor& t, int64_t h) {
    void* data = where.place(t.data(), t.size_bytes());
    placed = placed && data != nullptr;
    return desc(t, data, packed, B, n, h, c.d);
  };

  HostTensor q(c.dtype, B, n, c.hq, c.d, c.head_pad), k(c.dtype, B, n, c.hkv, c.d, c.head_pad),
      v(c.dtype, B, n, c.hkv, c.d, c.head_pad), o(c.dtype, B, n, c.hq, c.d, c.head_pad);
  HostRowStat lse(B, c.hq, n);
  q.fill(take_rows(in.q, B, rows, c.hq * c.d, idx));
  k.fill(take_rows(in.k, B, rows, c.hkv * c.d, idx));
  v.fill(take_rows(in.v, B, rows, c.hkv * c.d, idx));
  o.poison();
  lse.poison();
  ringattn_tensor_t tq = place(q, c.hq), tk = place(k, c.hkv), tv = place(v, c.hkv),
                    to = place(o, c.hq);
  void* lse_data = where.place(lse.ref().data, lse.size_bytes());
  placed = placed && lse_data != nullptr;
  ringattn_tensor_t tl = desc_lse(lse, lse_data, packed, B, c.hq, n);
  ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;
  params.causal = c.causal;
  params.window_left = c.window_left;
  params.window_right = c.window_right;
  params.scheme = c.scheme;
  params.local_kernel = c.local_kernel;
  if (packed) {
    params.cu_seqlens = c.layout.cu.data();
    params.num_seqs = c.layout.num_seqs();
  }
  RingResult r;
  agree_ok(comm, placed ? RINGATTN_SUCCESS : RINGATTN_ERROR_CUDA, &r, "placing the inputs: ");
  if (!r.ok) return r;
  agree_ok(comm,
           ringattn_ring_forward(ctx, &tq, &tk, &tv, &to, c.with_lse ? &tl : nullptr, &params,
                                 where.stream()),
           &r, "forward: ");
  agree_ok(comm, where.fetch() ? RINGATTN_SUCCESS : RINGATTN_ERROR_CUDA, &r, "fetching O: ");

  std::vector<double> lo = o.values(), ll = lse.values(), ldq, ldk, ldv;
  if (c.backward && r.ok) {
    HostTensor dout(c.dtype, B, n, c.hq, c.d, c.head_pad), dq(c.dtype, B, n, c.hq, c.d, c.head_pad),
        dk(c.dtype, B, n, c.hkv, c.d, c.head_pad), dv(c.dtype, B, n, c.hkv, c.d, c.head_pad);
    dout.fill(take_rows(in.dout, B, rows, c.hq * c.d, idx));
    dq.poison();
    dk.poison();
    dv.poison();
    ringattn_tensor_t tdo = place(dout, c.hq), tdq = place(dq, c.hq), tdk = place(dk, c.hkv),
                      tdv = place(dv, c.hkv);
    agree_ok(comm, placed ? RINGATTN_SUCCESS : RINGATTN_ERROR_CUDA, &r, "placing dO: ");
    if (!r.ok) return r;
    agree_ok(comm,
             ringattn_ring_backward(ctx, &tq, &tk, &tv, &to, &tl, &tdo, &tdq, &tdk, &tdv, &params,
                                    where.stream()),
             &r, "backward: ");
    agree_ok(comm, where.fetch() ? RINGATTN_SUCCESS : RINGATTN_ERROR_CUDA, &r,
             "fetching the gradients: ");
    ldq = dq.values();
    ldk = dk.values();
    ldv = dv.values();
  }
  r.local = {lo, ll, ldq, ldk, ldv};

  assemble_global(c, lo, ll, ldq, ldk, ldv, comm, &r);
  return r;
}

void assemble_global(const RingCase& c, const std::vector<double>& lo,
                     const std::vector<double>& ll, const std::vector<double>& ldq,
                     const std::vector<double>& ldk, const std::vector<double>& ldv, MPI_Comm comm,
                     RingResult* res) {
  RingResult& r = *res;
  const int P = world_size(comm), me = world_rank(comm);
  const int64_t B = c.layout.packed ? 1 : c.layout.batch, rows = c.layout.rows();
  auto assemble = [&](const std::vector<double>& mine, int64_t width, bool cols,
                      std::vector<double>* out, int64_t bh) {
    auto parts = gather_to_root(mine, comm);
    if (me != 0) return;
    out->assign(static_cast<size_t>(cols ? bh * rows : B * rows * width),
                std::numeric_limits<double>::quiet_NaN());
    for (int p = 0; p < P; ++p) {
      const std::vector<int64_t> pidx = local_rows(c.layout, c.scheme, P, p);
      if (cols) {
        put_cols(out, bh, rows, pidx, parts[p]);
      } else {
        put_rows(out, B, rows, width, pidx, parts[p]);
      }
    }
  };
  assemble(lo, c.hq * c.d, false, &r.o, 0);
  assemble(ll, 1, true, &r.lse, B * c.hq);
  if (c.backward && r.ok) {
    assemble(ldq, c.hq * c.d, false, &r.dq, 0);
    assemble(ldk, c.hkv * c.d, false, &r.dk, 0);
    assemble(ldv, c.hkv * c.d, false, &r.dv, 0);
  }
}

::testing::AssertionResult check_against_reference(const RingCase& c, const RingInputs& in,
                                                   const RingResult& r, MPI_Comm comm,
                                                   RingErrors* errors) {
  ::testing::AssertionResult verdict = ::testing::AssertionSuccess();
  if (world_rank(comm) == 0) {
    if (!r.ok) {
      verdict = ::testing::AssertionFailure() << "call failed: " << r.error;
    } else {
      const AttnCase g = global_case(c);
      const FwdResult ref = reference_forward(g, in.q, in.k, in.v);
      const FwdResult naive = naive_forward(g, in.q, in.k, in.v, c.dtype);
      std::vector<std::vector<double>> ours = {r.o}, refs = {ref.o}, naives = {naive.o};
      if (c.with_lse) {
        ours.push_back(r.lse);
        refs.push_back(ref.lse);
        naives.push_back(naive.lse);
      }
      if (c.backward) {
        const BwdResult rb = reference_backward(g, in.q, in.k, in.v, in.dout);
        const BwdResult nb = naive_backward(g, in.q, in.k, in.v, in.dout, c.dtype);
        ours.insert(ours.end(), {r.dq, r.dk, r.dv});
        refs.insert(refs.end(), {rb.dq, rb.dk, rb.dv});
        naives.insert(naives.end(), {nb.dq, nb.dk, nb.dv});
      }
      const char* with[5] = {"O", "LSE", "dQ", "dK", "dV"};
      const char* without[4] = {"O", "dQ", "dK", "dV"};
      const char* const* names = c.with_lse ? with : without;
      // LSE is float32 whatever the input dtype: judge it as float32 output of a computation in
      // the input dtype (the naive LSE comes from rounded scores, so the 2x rule still applies).
      for (size_t i = 0; i < ours.size(); ++i) {
        if (errors != nullptr) {
          errors->e[i] = max_abs_error(ours[i], refs[i]);
          errors->naive[i] = max_abs_error(naives[i], refs[i]);
          errors->ref_max[i] = max_abs(refs[i]);
        }
        const ::testing::AssertionResult one =
            within_2x_naive(names[i], ours[i], refs[i], naives[i], c.dtype);
        if (!one && verdict) verdict = one;
      }
    }
  }
  ::testing::AssertionResult shared = share_verdict(verdict, comm);
  if (!shared) shared << "\n  case: " << describe(c);
  return shared;
}

}  // namespace test
}  // namespace ringattn
