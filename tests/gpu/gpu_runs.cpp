#include "gpu_runs.h"

#include <math.h>

#include <utility>

namespace ringattn {
namespace test {

bool gpu_available() {
  static const bool ok = [] {
    int n = 0, major = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
      cudaGetLastError();
      return false;
    }
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess) {
      return false;
    }
    return major >= 8;
  }();
  return ok;
}

bool cuda_ok(cudaError_t err, const char* what) {
  if (err == cudaSuccess) err = cudaGetLastError();
  if (err != cudaSuccess) {
    ADD_FAILURE() << what << ": " << cudaGetErrorName(err) << " " << cudaGetErrorString(err);
    return false;
  }
  return true;
}

size_t host_tensor_bytes(DType t, int64_t b, int64_t s, int64_t h, int64_t d, int64_t pad) {
  return static_cast<size_t>(b * s * h * (d + pad)) * dtype_bytes(t) + 1;
}

DeviceMirror::DeviceMirror(const void* host, size_t bytes) : bytes_(bytes) {
  if (cuda_ok(cudaMalloc(&ptr_, bytes), "cudaMalloc")) {
    cuda_ok(cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
}
DeviceMirror::~DeviceMirror() { cudaFree(ptr_); }
void DeviceMirror::download(void* host) const {
  cuda_ok(cudaDeviceSynchronize(), "kernel execution");
  cuda_ok(cudaMemcpy(host, ptr_, bytes_, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
}

namespace {

// A HostTensor together with its device mirror; ref() describes the device copy.
struct Dev {
  HostTensor host;
  DeviceMirror dev;
  Dev(HostTensor h, int64_t b, int64_t s, int64_t hh, int64_t d, int64_t pad)
      : host(std::move(h)), dev(host.data(), host_tensor_bytes(host.dtype(), b, s, hh, d, pad)) {}
  TensorRef ref() {
    TensorRef r = host.ref();
    r.data = dev.get();
    return r;
  }
  std::vector<double> values() {
    dev.download(host.data());
    return host.values();
  }
};

struct DevStat {
  HostRowStat host;
  DeviceMirror dev;
  DevStat(HostRowStat h, int64_t n) : host(std::move(h)), dev(host.ref().data, (n + 1) * 4) {}
  RowStatRef ref() {
    RowStatRef r = host.ref();
    r.data = static_cast<float*>(dev.get());
    return r;
  }
  std::vector<double> values() {
    dev.download(host.ref().data);
    return host.values();
  }
};

HostTensor make_tensor(DType t, int64_t b, int64_t s, int64_t h, int64_t d, int64_t pad,
                       const std::vector<double>* values) {
  HostTensor x(t, b, s, h, d, pad);
  x.poison();  // padding (and outputs) NaN
  if (values != nullptr) x.fill(*values);
  return x;
}

HostRowStat make_stat(int64_t b, int64_t h, int64_t s, const std::vector<double>* values) {
  HostRowStat x(b, h, s);
  x.poison();
  if (values != nullptr) x.fill(*values);
  return x;
}

FwdParams fwd_params(const KernelSpec& s, const TensorRef& q, const TensorRef& k,
                     const TensorRef& v, const TensorRef& o, const RowStatRef& lse, OutMode mode) {
  FwdParams p;
  p.batch = s.batch;
  p.sq = s.qb.rows();
  p.sk = s.kb.rows();
  p.hq = s.hq;
  p.hkv = s.hkv;
  p.d = s.d;
  p.q = q;
  p.k = k;
  p.v = v;
  p.o = o;
  p.lse = lse;
  p.scale = static_cast<float>(1.0 / sqrt(static_cast<double>(s.d)));
  p.mask = s.mask;
  p.q_pos = s.qb.map();
  p.k_pos = s.kb.map();
  p.out_mode = mode;
  return p;
}

// Inputs of one spec on the device.
struct DevInputs {
  Dev q, k, v, dout;
  DevInputs(const KernelSpec& s, const KernelInputs& in)
      : q(make_tensor(s.dtype, s.batch, s.qb.rows(), s.hq, s.d, s.head_pad, &in.q), s.batch,
          s.qb.rows(), s.hq, s.d, s.head_pad),
        k(make_tensor(s.dtype, s.batch, s.kb.rows(), s.hkv, s.d, s.head_pad, &in.k), s.batch,
          s.kb.rows(), s.hkv, s.d, s.head_pad),
        v(make_tensor(s.dtype, s.batch, s.kb.rows(), s.hkv, s.d, s.head_pad, &in.v), s.batch,
          s.kb.rows(), s.hkv, s.d, s.head_pad),
        dout(make_tensor(s.dtype, s.batch, s.qb.rows(), s.hq, s.d, s.head_pad, &in.dout), s.batch,
             s.qb.rows(), s.hq, s.d, s.head_pad) {}
};

struct DevGrads {
  Dev dq, dk, dv;
  DevGrads(const KernelSpec& s, DType t, const BackwardOut* init)
      : dq(make_tensor(t, s.batch, s.qb.rows(), s.hq, s.d, s.head_pad, init ? &init->dq : nullptr),
           s.batch, s.qb.rows(), s.hq, s.d, s.head_pad),
        dk(make_tensor(t, s.batch, s.kb.rows(), s.hkv, s.d, s.head_pad, init ? &init->dk : nullptr),
           s.batch, s.kb.rows(), s.hkv, s.d, s.head_pad),
        dv(make_tensor(t, s.batch, s.kb.rows(), s.hkv, s.d, s.head_pad, init ? &init->dv : nullptr),
           s.batch, s.kb.rows(), s.hkv, s.d, s.head_pad) {}
};

// Forward + delta + backward into `g`; returns the backward's path.
cuda::Path run_backward_into(const KernelSpec& s, DevInputs& in, DevGrads& g, bool accumulate) {
  const int64_t sq = s.qb.rows(), sk = s.kb.rows();
  Dev o(make_tensor(s.dtype, s.batch, sq, s.hq, s.d, s.head_pad, nullptr), s.batch, sq, s.hq, s.d,
        s.head_pad);
  DevStat lse(make_stat(s.batch, s.hq, sq, nullptr), s.batch * s.hq * sq);
  DevStat delta(make_stat(s.batch, s.hq, sq, nullptr), s.batch * s.hq * sq);
  cuda_ok(cuda::forward(
              fwd_params(s, in.q.ref(), in.k.ref(), in.v.ref(), o.ref(), lse.ref(), kOutFinal),
              nullptr),
          "cuda::forward");
  cuda_ok(cuda::compute_delta(s.batch, sq, s.hq, s.d, in.dout.ref(), o.ref(), delta.ref(), nullptr),
          "cuda::compute_delta");
  BwdParams p;
  p.batch = s.batch;
  p.sq = sq;
  p.sk = sk;
  p.hq = s.hq;
  p.hkv = s.hkv;
  p.d = s.d;
  p.q = in.q.ref();
  p.k = in.k.ref();
  p.v = in.v.ref();
  p.dout = in.dout.ref();
  p.lse = lse.ref();
  p.delta = delta.ref();
  p.dq = g.dq.ref();
  p.dk = g.dk.ref();
  p.dv = g.dv.ref();
  p.accumulate = accumulate;
  p.scale = static_cast<float>(1.0 / sqrt(static_cast<double>(s.d)));
  p.mask = s.mask;
  p.q_pos = s.qb.map();
  p.k_pos = s.kb.map();
  cuda_ok(cuda::backward(p, nullptr), "cuda::backward");
  cuda_ok(cudaDeviceSynchronize(), "backward execution");
  return cuda::backward_path(p);
}

}  // namespace

GpuForward gpu_forward(const KernelSpec& s, const KernelInputs& in, OutMode mode) {
  const int64_t sq = s.qb.rows();
  DevInputs d(s, in);
  Dev o(
      make_tensor(mode == kOutFinal ? s.dtype : kF32, s.batch, sq, s.hq, s.d, s.head_pad, nullptr),
      s.batch, sq, s.hq, s.d, s.head_pad);
  DevStat lse(make_stat(s.batch, s.hq, sq, nullptr), s.batch * s.hq * sq);
  const FwdParams p = fwd_params(s, d.q.ref(), d.k.ref(), d.v.ref(), o.ref(), lse.ref(), mode);
  cuda_ok(cuda::forward(p, nullptr), "cuda::forward");
  GpuForward r;
  r.path = cuda::forward_path(p);
  r.out.o = o.values();
  r.out.lse = lse.values();
  return r;
}

GpuForward gpu_forward_merge(const KernelSpec& s, const KernelInputs& in, const ForwardOut& prior) {
  const int64_t sq = s.qb.rows();
  DevInputs d(s, in);
  Dev o(make_tensor(kF32, s.batch, sq, s.hq, s.d, s.head_pad, &prior.o), s.batch, sq, s.hq, s.d,
        s.head_pad);
  DevStat lse(make_stat(s.batch, s.hq, sq, &prior.lse), s.batch * s.hq * sq);
  const FwdParams p =
      fwd_params(s, d.q.ref(), d.k.ref(), d.v.ref(), o.ref(), lse.ref(), kOutMergeF32);
  cuda_ok(cuda::forward(p, nullptr), "cuda::forward (merge)");
  GpuForward r;
  r.path = cuda::forward_path(p);
  r.out.o = o.values();
  r.out.lse = lse.values();
  return r;
}

GpuBackward gpu_backward(const KernelSpec& s, const KernelInputs& in) {
  DevInputs d(s, in);
  DevGrads g(s, s.dtype, nullptr);
  GpuBackward r;
  r.path = run_backward_into(s, d, g, false);
  r.out.dq = g.dq.values();
  r.out.dk = g.dk.values();
  r.out.dv = g.dv.values();
  return r;
}

GpuBackward gpu_backward_accumulate(const KernelSpec& s, const KernelInputs& in,
                                    const BackwardOut& init) {
  DevInputs d(s, in);
  DevGrads g(s, kF32, &init);
  GpuBackward r;
  r.path = run_backward_into(s, d, g, true);
  r.out.dq = g.dq.values();
  r.out.dk = g.dk.values();
  r.out.dv = g.dv.values();
  return r;
}

std::vector<unsigned char> gpu_backward_bytes(const KernelSpec& s, const KernelInputs& in) {
  DevInputs d(s, in);
  DevGrads g(s, s.dtype, nullptr);
  run_backward_into(s, d, g, false);
  std::vector<unsigned char> bytes;
  // The doubles are exact images of the dtype's values, so equal bytes mean equal outputs.
  for (Dev* t : {&g.dq, &g.dk, &g.dv}) {
    const std::vector<double> v = t->values();
    const unsigned char* vb = reinterpret_cast<const unsigned char*>(v.data());
    bytes.insert(bytes.end(), vb, vb + v.size() * sizeof(double));
  }
  return bytes;
}

}  // namespace test
}  // namespace ringattn
