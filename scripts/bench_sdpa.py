#!/usr/bin/env python3
"""Times ringattn's CUDA forward/backward against torch SDPA (flash and cuDNN backends).

ringattn runs twice: with its own kernels, and through its cuDNN path (params.local_kernel
RINGATTN_LOCAL_KERNEL_CUDNN: cuDNN's fused attention called by the library, its columns
"cudnnpath"), when the library was built with cuDNN.

Same GPU, same process, same inputs, same timer: ringattn runs through its C API
(libringattn.so via ctypes) on torch's current stream; SDPA runs under
torch.nn.attention.sdpa_kernel with one backend at a time. Timing: CUDA events around each call,
warm-up first, the median of many repetitions. Every problem holds B*H*S = 256k rows per tensor
(64 MiB per bf16 tensor at D=128), well beyond the 50 MiB L2, so repeated calls on one input set
do not run from cache.

Usage: bench_sdpa.py --lib build/src/libringattn.so --json out.json [--quick]
"""
import argparse
import ctypes
import datetime
import json
import math
import statistics
import subprocess
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

RINGATTN_BACKEND_CUDA = 1
RINGATTN_LOCAL_KERNEL_CUDNN = 1
DTYPES = {"bf16": (torch.bfloat16, 2), "fp16": (torch.float16, 1)}


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int), ("ndim", ctypes.c_int32),
                ("shape", ctypes.c_int64 * 4), ("strides", ctypes.c_int64 * 4)]


class Params(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("softmax_scale", ctypes.c_float),
                ("causal", ctypes.c_int32), ("window_left", ctypes.c_int64),
                ("window_right", ctypes.c_int64), ("scheme", ctypes.c_int),
                ("cu_seqlens", ctypes.c_void_p), ("num_seqs", ctypes.c_int64),
                ("local_kernel", ctypes.c_int)]


def describe(t, code):
    d = Tensor()
    d.data = t.data_ptr()
    d.dtype = code
    d.ndim = t.dim()
    for i in range(t.dim()):
        d.shape[i] = t.shape[i]
        d.strides[i] = t.stride(i)
    return d


class Ringattn:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.ringattn_get_last_error.restype = ctypes.c_char_p
        self.lib.ringattn_attention_forward.restype = ctypes.c_int
        self.lib.ringattn_attention_backward.restype = ctypes.c_int

    def check(self, rc, what):
        if rc != 0:
            raise RuntimeError(f"{what}: status {rc}: {self.lib.ringattn_get_last_error().decode()}")

    def params(self, causal, local_kernel=0):
        p = Params()
        p.struct_size = ctypes.sizeof(Params)
        p.softmax_scale = 0.0
        p.causal = 1 if causal else 0
        p.window_left = -1
        p.window_right = -1
        p.scheme = 0
        p.cu_seqlens = None
        p.num_seqs = 0
        p.local_kernel = local_kernel
        return p

    def forward(self, q, k, v, o, lse, code, causal, local_kernel=0):
        args = [describe(q, code), describe(k, code), describe(v, code), describe(o, code),
                describe(lse, 0)]
        p = self.params(causal, local_kernel)
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        rc = self.lib.ringattn_attention_forward(*[ctypes.byref(a) for a in args],
                                                 ctypes.byref(p), RINGATTN_BACKEND_CUDA, stream)
        self.check(rc, "ringattn_attention_forward")

    def backward(self, q, k, v, o, lse, dout, dq, dk, dv, code, causal, local_kernel=0):
        ts = [describe(q, code), describe(k, code), describe(v, code), describe(o, code),
              describe(lse, 0), describe(dout, code), describe(dq, code), describe(dk, code),
              describe(dv, code)]
        p = self.params(causal, local_kernel)
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        rc = self.lib.ringattn_attention_backward(*[ctypes.byref(a) for a in ts], ctypes.byref(p),
                                                  RINGATTN_BACKEND_CUDA, stream)
        self.check(rc, "ringattn_attention_backward")


def time_ms(fn, budget_ms=250.0, min_reps=5, max_reps=50):
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    est = max(start.elapsed_time(end), 1e-3)
    reps = int(max(min_reps, min(max_reps, budget_ms / est)))
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def sdpa_fn(backend, q, k, v, causal):
    # ringattn's [B, S, H, D] tensors seen as SDPA's [B, H, S, D] (strided views, no copies).
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def run():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
    return run


def flops(b, h, s, d, causal):
    f = 4.0 * b * h * s * s * d
    return f / 2 if causal else f


def bench_case(ra, dtype_name, d, s, causal, do_bwd, rows):
    dt, code = DTYPES[dtype_name]
    h = 16
    b = max(1, (256 * 1024) // (s * h))
    torch.manual_seed(s * 7 + d)
    q = torch.randn(b, s, h, d, device="cuda", dtype=dt)
    k = torch.randn(b, s, h, d, device="cuda", dtype=dt)
    v = torch.randn(b, s, h, d, device="cuda", dtype=dt)
    o = torch.full_like(q, float("nan"))
    lse = torch.full((b, h, s), float("nan"), device="cuda", dtype=torch.float32)
    f = flops(b, h, s, d, causal)
    row = {"dtype": dtype_name, "D": d, "S": s, "B": b, "H": h, "causal": causal}

    ra.forward(q, k, v, o, lse, code, causal)
    torch.cuda.synchronize()
    row["ours_fwd_ms"] = time_ms(lambda: ra.forward(q, k, v, o, lse, code, causal))
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION),
                          ("cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            fn = sdpa_fn(backend, q, k, v, causal)
            ref = fn()
            torch.cuda.synchronize()
            row[f"{name}_fwd_ms"] = time_ms(fn)
            if name == "flash":
                row["max_abs_diff_vs_flash"] = (o - ref.transpose(1, 2)).abs().max().item()
        except Exception as e:  # a backend that refuses the problem is reported, not fatal
            row[f"{name}_fwd_ms"] = None
            row[f"{name}_error"] = str(e).splitlines()[0][:200]
    row["ours_fwd_tflops"] = f / row["ours_fwd_ms"] / 1e9
    # The cuDNN path: the library calling cuDNN (whole sequence = one cuDNN block).
    oc = torch.full_like(q, float("nan"))
    lsec = torch.full_like(lse, float("nan"))
    try:
        ra.forward(q, k, v, oc, lsec, code, causal, RINGATTN_LOCAL_KERNEL_CUDNN)
        torch.cuda.synchronize()
        row["cudnnpath_fwd_ms"] = time_ms(
            lambda: ra.forward(q, k, v, oc, lsec, code, causal, RINGATTN_LOCAL_KERNEL_CUDNN))
        row["cudnnpath_max_abs_diff_vs_ours"] = (oc - o).abs().max().item()
        row["cudnnpath_lse_max_abs_diff_vs_ours"] = (lsec - lse).abs().max().item()
        if row.get("cudnn_fwd_ms"):
            row["cudnnpath_fwd_ratio_vs_cudnn"] = row["cudnn_fwd_ms"] / row["cudnnpath_fwd_ms"]
    except RuntimeError as e:
        row["cudnnpath_fwd_ms"] = None
        row["cudnnpath_error"] = str(e).splitlines()[0][:200]
    if row.get("flash_fwd_ms"):
        row["fwd_ratio_vs_flash"] = row["flash_fwd_ms"] / row["ours_fwd_ms"]
    if row.get("cudnn_fwd_ms"):
        row["fwd_ratio_vs_cudnn"] = row["cudnn_fwd_ms"] / row["ours_fwd_ms"]

    if do_bwd:
        dout = torch.randn_like(q)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        ra.backward(q, k, v, o, lse, dout, dq, dk, dv, code, causal)
        torch.cuda.synchronize()
        row["ours_bwd_ms"] = time_ms(
            lambda: ra.backward(q, k, v, o, lse, dout, dq, dk, dv, code, causal))
        row["ours_bwd_tflops"] = 2.5 * f / row["ours_bwd_ms"] / 1e9
        for name, backend in (("flash", SDPBackend.FLASH_ATTENTION),
                              ("cudnn", SDPBackend.CUDNN_ATTENTION)):
            try:
                qq, kk, vv = (x.detach().requires_grad_(True) for x in (q, k, v))
                with sdpa_kernel(backend):
                    out = F.scaled_dot_product_attention(
                        qq.transpose(1, 2), kk.transpose(1, 2), vv.transpose(1, 2),
                        is_causal=causal)
                g = dout.transpose(1, 2)
                grads = torch.autograd.grad(out, (qq, kk, vv), g, retain_graph=True)
                if name == "flash":
                    row["max_abs_diff_dq_vs_flash"] = (dq - grads[0]).abs().max().item()
                    row["max_abs_diff_dk_vs_flash"] = (dk - grads[1]).abs().max().item()
                    row["max_abs_diff_dv_vs_flash"] = (dv - grads[2]).abs().max().item()
                row[f"{name}_bwd_ms"] = time_ms(
                    lambda: torch.autograd.grad(out, (qq, kk, vv), g, retain_graph=True))
                del out, grads
            except Exception as e:
                row[f"{name}_bwd_ms"] = None
                row[f"{name}_bwd_error"] = str(e).splitlines()[0][:200]
        if row.get("cudnnpath_fwd_ms"):
            dqc, dkc, dvc = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
            try:
                args = (q, k, v, oc, lsec, dout, dqc, dkc, dvc, code, causal,
                        RINGATTN_LOCAL_KERNEL_CUDNN)
                ra.backward(*args)
                torch.cuda.synchronize()
                row["cudnnpath_bwd_ms"] = time_ms(lambda: ra.backward(*args))
                row["cudnnpath_max_abs_diff_dq_vs_ours"] = (dqc - dq).abs().max().item()
                row["cudnnpath_max_abs_diff_dk_vs_ours"] = (dkc - dk).abs().max().item()
                if row.get("cudnn_bwd_ms"):
                    row["cudnnpath_bwd_ratio_vs_cudnn"] = (row["cudnn_bwd_ms"]
                                                           / row["cudnnpath_bwd_ms"])
            except RuntimeError as e:
                row["cudnnpath_bwd_ms"] = None
                row["cudnnpath_bwd_error"] = str(e).splitlines()[0][:200]
            del dqc, dkc, dvc
        if row.get("flash_bwd_ms"):
            row["bwd_ratio_vs_flash"] = row["flash_bwd_ms"] / row["ours_bwd_ms"]
        if row.get("cudnn_bwd_ms"):
            row["bwd_ratio_vs_cudnn"] = row["cudnn_bwd_ms"] / row["ours_bwd_ms"]
    rows.append(row)
    print(json.dumps(row), flush=True)
    del q, k, v, o, lse
    torch.cuda.empty_cache()


def fmt(x, w=7, p=2):
    return f"{x:{w}.{p}f}" if isinstance(x, (int, float)) and x is not None else " " * (w - 1) + "-"


def print_table(rows):
    print("dtype  D    S      B  caus | fwd ms ours  flash  cudnn | x flash x cudnn | "
          "bwd ms ours  flash  cudnn | x flash x cudnn | diff")
    for r in rows:
        print(f"{r['dtype']:5s} {r['D']:3d} {r['S']:6d} {r['B']:3d} {int(r['causal']):4d} |"
              f" {fmt(r.get('ours_fwd_ms'))}{fmt(r.get('flash_fwd_ms'))}{fmt(r.get('cudnn_fwd_ms'))} |"
              f" {fmt(r.get('fwd_ratio_vs_flash'))}{fmt(r.get('fwd_ratio_vs_cudnn'))} |"
              f" {fmt(r.get('ours_bwd_ms'))}{fmt(r.get('flash_bwd_ms'))}{fmt(r.get('cudnn_bwd_ms'))} |"
              f" {fmt(r.get('bwd_ratio_vs_flash'))}{fmt(r.get('bwd_ratio_vs_cudnn'))} |"
              f" {fmt(r.get('max_abs_diff_vs_flash'), 8, 4)}")


def print_cudnn_path(rows):
    """The cuDNN path against torch SDPA's cuDNN backend; the target rows (bf16, D=128,
    S=8192) are marked against 0.95x."""
    print("cuDNN path (ringattn calling cuDNN) vs SDPA cuDNN: x > 1 = faster")
    print("dtype  D    S      B  caus | fwd ms path  sdpa      x | bwd ms path  sdpa      x | target")
    for r in rows:
        if "cudnnpath_fwd_ms" not in r:
            continue
        target = r["dtype"] == "bf16" and r["D"] == 128 and r["S"] == 8192
        verdict = ""
        if target:
            fx, bx = r.get("cudnnpath_fwd_ratio_vs_cudnn"), r.get("cudnnpath_bwd_ratio_vs_cudnn")
            met = fx is not None and bx is not None and fx >= 0.95 and bx >= 0.95
            verdict = ">= 0.95x: " + ("met" if met else "NOT met")
        print(f"{r['dtype']:5s} {r['D']:3d} {r['S']:6d} {r['B']:3d} {int(r['causal']):4d} |"
              f" {fmt(r.get('cudnnpath_fwd_ms'))}{fmt(r.get('cudnn_fwd_ms'))}"
              f"{fmt(r.get('cudnnpath_fwd_ratio_vs_cudnn'))} |"
              f" {fmt(r.get('cudnnpath_bwd_ms'))}{fmt(r.get('cudnn_bwd_ms'))}"
              f"{fmt(r.get('cudnnpath_bwd_ratio_vs_cudnn'))} | {verdict}"
              + (f" error: {r['cudnnpath_error']}" if r.get("cudnnpath_error") else ""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--commit", default="uncommitted")
    ap.add_argument("--quick", action="store_true", help="the target problems only")
    args = ap.parse_args()
    ra = Ringattn(args.lib)
    rows = []
    # The targets first (bf16, D=128, S=8192, B=2, H=16), so a time limit cannot cut them.
    for causal in (False, True):
        bench_case(ra, "bf16", 128, 8192, causal, True, rows)
    if not args.quick:
        for dtype_name in ("bf16", "fp16"):
            for d in (64, 128, 256):
                for s in (1024, 2048, 4096, 8192, 16384):
                    for causal in (False, True):
                        if dtype_name == "bf16" and d == 128 and s == 8192:
                            continue
                        bench_case(ra, dtype_name, d, s, causal,
                                   dtype_name == "bf16" and s in (2048, 8192, 16384), rows)
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm",
                          "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "gpu": torch.cuda.get_device_name(), "nvidia_smi": smi, "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version(), "commit": args.commit,
            "timing": "CUDA events, 2 warm-ups, median of 5..50 repetitions (~250 ms each)",
            "flops": "forward 4*B*H*S^2*D (half for causal), backward 2.5x forward"}
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print_table(rows)
    print_cudnn_path(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
