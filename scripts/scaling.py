#!/usr/bin/env python3
"""Scaling experiments for ringattn: sweeps of ringattn_bench, a performance model calibrated in
the same run and validated against every measured point, CSV, JSON and PNG plots.

  /usr/bin/python3 scripts/scaling.py --out DIR [--quick] [--build build]
        [--sweeps strong,weak,seq,schemes,tiny,netns,hybrid] [--rates 50mbit,400mbit]
  /usr/bin/python3 scripts/scaling.py --out DIR --replot          # model and plots from DIR/raw
  /usr/bin/python3 scripts/scaling.py --out DIR --extrapolate bench/clusters/h200_ib.json --no-sweeps
  /usr/bin/python3 scripts/scaling.py --out DIR --quick --dry-run  # the plan, runs nothing

What one run does (docs/scaling.md, "Scaling experiments"):
  1. calibration: ringattn_kernel_bench with one thread (the throughput of one rank) for full and
     causal blocks at several sizes; an MPI ping-pong and paired exchange between two ranks on
     this machine (and across emulated hosts, for the shaped links); a one-rank ring
     (`ringattn_bench -np 1`, forward and backward apart, three sizes) for the ring machinery's
     factor and fixed cost per call beyond the kernels;
  2. sweeps (ringattn_bench, one OpenMP thread per rank): strong (fixed S, P = 1, 2, 4, 8), weak
     (fixed S/P), sequence (S doubling at P = 2), schemes (contiguous, zigzag, striped, causal,
     with every rank's compute from --verbose for the imbalance), tiny shards (fixed costs and
     latency), shaped links between emulated hosts (scripts/netns_mpirun.sh, root), the hybrid
     layout on 2 emulated hosts x 2 ranks;
  3. the model (scripts/perf_model.py) predicts every measured point from the calibration alone;
     DIR/summary.json holds "model_validation" with predicted and measured times and the errors.
On this machine P ranks share its cores: the model treats the effective cores as min(P, cores)
(perf_model.py, "Shared cores"), and the efficiency is against min(P, cores) x one rank.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import perf_model as pm  # noqa: E402
from dataclasses import replace as pm_replace  # noqa: E402

SWEEPS = ("strong", "weak", "seq", "schemes", "tiny", "netns", "hybrid")
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "OMP_NUM_THREADS": "1",
           "RINGATTN_TIMEOUT_MS": "600000"}


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="scaling.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output directory (summary.json, results.csv, *.png, raw/)")
    ap.add_argument("--quick", action="store_true", help="small problems, one timed iteration (< 5 min on 2 cores)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="build directory with examples/")
    ap.add_argument("--sweeps", default=",".join(SWEEPS), help="comma list of " + ",".join(SWEEPS))
    ap.add_argument("--ranks", default="1,2,4,8", help="P of the strong and weak sweeps")
    ap.add_argument("--heads", type=int, default=0, help="query heads (default 8, quick 4)")
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--dtype", default="bf16", choices=sorted(pm.DTYPE_BYTES))
    ap.add_argument("--iters", type=int, default=0, help="timed iterations per run (default 3, quick 1)")
    ap.add_argument("--rates", default="", help="shaped link rates of the netns sweep (default 50mbit,400mbit; quick 50mbit)")
    ap.add_argument("--cores", type=int, default=0, help="cores the ranks share (default: os.cpu_count())")
    ap.add_argument("--dry-run", action="store_true", help="print the runs and their commands, run nothing")
    ap.add_argument("--replot", action="store_true", help="no runs: model, summary and plots from DIR/raw")
    ap.add_argument("--extrapolate", metavar="CLUSTER_JSON", help="also write model output for a cluster file")
    ap.add_argument("--no-sweeps", action="store_true", help="with --extrapolate: only the extrapolation, no runs")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run at most")
    ap.add_argument("--tcp-overlap", dest="tcp_overlaps_off", action="store_false",
                    help="model transfers over TCP (emulated hosts) as overlapping compute (the model's first version)")
    ap.add_argument("--block-model", action="store_true",
                    help="model kernel time by the visible FLOPs of each block (the model before tile accounting)")
    ap.add_argument("--pingpong-worker", metavar="JSON", help=argparse.SUPPRESS)
    ap.add_argument("--pingpong-sizes", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.pingpong_worker:
        return a
    if not a.out:
        ap.error("--out DIR is required")
    a.sweeps = [s for s in a.sweeps.split(",") if s]
    bad = [s for s in a.sweeps if s not in SWEEPS]
    if bad:
        ap.error(f"unknown sweep(s) {bad}; choose from {','.join(SWEEPS)}")
    try:
        a.ranks = sorted({int(x) for x in a.ranks.split(",") if x})
    except ValueError:
        ap.error("--ranks: comma list of integers")
    if not a.ranks or min(a.ranks) < 1:
        ap.error("--ranks: positive integers")
    a.heads = a.heads or (4 if a.quick else 8)
    a.iters = a.iters or (1 if a.quick else 3)
    a.rates = [r for r in (a.rates or ("50mbit" if a.quick else "50mbit,400mbit")).split(",") if r]
    for r in a.rates:
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?([kKmMgG])?bit", r):
            ap.error(f"--rates: '{r}' is not a rate such as 50mbit")
    if a.head_dim % 8 or a.head_dim < 32:
        ap.error("--head-dim: a multiple of 8, at least 32")
    a.cores = a.cores or os.cpu_count() or 1
    return a


def rate_bytes_per_s(rate: str) -> float:
    m = re.fullmatch(r"([0-9.]+)([kKmMgG]?)bit", rate)
    mult = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    return float(m.group(1)) * mult / 8


# ---------------------------------------------------------------------------------------------
# The plan of runs
# ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    name: str
    sweep: str            # calib-kernel, calib-ring, calib-link, strong, weak, ...
    cmd: List[str]
    problem: Optional[pm.Problem] = None
    netns: Optional[dict] = None  # {"hosts": N, "slots": s, "rate": r}
    est_s: float = 5.0
    kind: str = "bench"   # bench | kernel | pingpong
    meta: dict = field(default_factory=dict)
    launches: int = 1     # separate launches of the command; the median launch is kept (execute)


def bench_cmd(a, P: int, S: int, scheme="zigzag", mask="causal", mode="both", U=1,
              placement="ulysses", iters=None, warmup=1) -> List[str]:
    c = [os.path.join(a.build, "examples", "ringattn_bench"), "-b", str(S), "-e", str(S),
         "-H", str(a.heads), "-d", str(a.head_dim), "--dtype", a.dtype, "--scheme", scheme,
         "--mode", mode, "-n", str(iters or a.iters), "-w", str(warmup), "-c", "0", "--verbose"]
    if mask == "causal":
        c.append("--causal")
    if U > 1:
        c += ["--ulysses-degree", str(U), "--placement", placement]
    return c


def est_compute_s(a, S: int, P: int, mask="causal", mode="both", runs=None) -> float:
    f = 4.0 * a.heads * S * S * a.head_dim * (0.5 if mask == "causal" else 1.0)
    f *= {"fwd": 1.0, "bwd": 3.5, "both": 3.5}[mode]
    per_iter = f / (30e9 * min(P, a.cores))
    return 1.5 + (runs or (a.iters + 1)) * per_iter


RING1_SIZES = [24, 48, 96, 192, 384, 768, 1536, 3072, 6144]
RING1_SIZES_QUICK = [24, 48, 96, 192, 384, 768, 1536, 3072]
CONC_S = 1024  # block size of the concurrent kernel benches (its one-copy time is a calibration point)
# Steady calibration (docs/scaling.md, "Calibration"): one launch of a small problem can sit
# 10-40 % off another (the process's placement and memory, the scheduler), and a mean over a few
# iterations of tens of microseconds carries every interruption. So every calibration
# measurement is timed for at least CALIB_TIMED_S (iterations scaled by size, up to
# CALIB_MAX_ITERS), and the short ones are launched CALIB_LAUNCHES times with the median launch
# kept. Validation points whose iteration lasts less than POINT_SHORT_ITER_S (the tiny
# shards) are launched POINT_LAUNCHES times (median launch), with up to POINT_MAX_ITERS iterations.
CALIB_TIMED_S = 0.05
CALIB_MAX_ITERS = 2000
CALIB_LAUNCHES = 3
CALIB_SHORT_S = 0.5     # launches of calibration runs timing less than this are repeated
POINT_MAX_ITERS = 200
POINT_SHORT_ITER_S = 0.01  # points whose iteration lasts less (by iter_seconds) are launched 9 times
POINT_LAUNCHES = 9
# The message-cost rings (two ranks, and P ranks on shared cores): the median of MSG_LAUNCHES
# launches, each timed for MSG_TIMED_S (one launch of 4 ranks on 2 cores varied by up to 40 %).
MSG_LAUNCHES = 7
MSG_TIMED_S = 0.3
# Powers of 2 (the validation points' kernel calls: a chunk of S / (4R) rows against S / R keys
# has the size sqrt(rows x cols) = S / (2R)) and 3 x 2^k up to 96 (the calls of the one-rank
# calibration rings at 24 ... 192 rows: their size is rows / 2), so that the one-rank rings'
# factor compares the ring with the kernel bench at the sizes it calls, not interpolated ones.
KERNEL_SIZES = [8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 2048]  # + 4096 without --quick


def ringp_calib_S(P: int) -> int:
    """S of the message-cost rings of P ranks: 24 rows per rank, the smallest one-rank
    calibration ring's shard (RING1_SIZES[0]), so their compute is modelled with a factor
    measured at that very shard size and kernel sizes measured as such (12: calls of 6 x 24)."""
    return RING1_SIZES[0] * P


def kernel_iters(a, S: int, causal: bool) -> int:
    """Iterations of the kernel bench (it reports the median) so a pass lasts CALIB_TIMED_S."""
    f = 4.0 * a.heads * S * S * a.head_dim * (0.5 if causal else 1.0)
    t = f / (10e9 if S <= 32 else 40e9 if S <= 256 else 80e9)
    return int(min(CALIB_MAX_ITERS, max(3, math.ceil(CALIB_TIMED_S / t))))


def iter_seconds(a, S: int, P: int, mask="causal", mode="both") -> float:
    """A rough time of one iteration (for iteration counts and launch decisions)."""
    f = {"fwd": 1.0, "bwd": 3.5, "both": 3.5}[mode] * 4.0 * a.heads * S * S * a.head_dim
    f *= 0.5 if mask == "causal" else 1.0
    return f / (60e9 * min(P, a.cores)) + 2e-4 * P


def timed_iters(a, S: int, P: int, mask="causal", mode="both", target_s=0.3, lo=0,
                cap=POINT_MAX_ITERS) -> int:
    """Timed iterations so that about target_s is timed (one iteration of a few ms is noise)."""
    per_iter = iter_seconds(a, S, P, mask, mode)
    return int(min(cap, max(a.iters, lo, math.ceil(target_s / per_iter))))


def calib_launches(timed_s: float) -> int:
    return CALIB_LAUNCHES if timed_s < CALIB_SHORT_S else 1


def oversubscribed_ranks(a) -> List[int]:
    """Rank counts above the cores that the sweeps use (strong, weak; schemes, tiny, hybrid: 4)."""
    ps = set(a.ranks) if {"strong", "weak"} & set(a.sweeps) else set()
    if {"schemes", "tiny", "hybrid"} & set(a.sweeps):
        ps.add(4)
    return sorted(P for P in ps if P > a.cores)


def plan_runs(a) -> List[Run]:
    q = a.quick
    runs: List[Run] = []
    kb = os.path.join(a.build, "examples", "ringattn_kernel_bench")
    # down to the sub-blocks of the tiny-shard runs (S = 128 over 2 and 4 ranks: 32 and 16 rows)
    # down to 8 rows (the tiny P = 4 point's calls, 8 x 32 rows: size 16; the P-rank rings' 6 x 24: 12)
    ksizes = KERNEL_SIZES + ([] if q else [4096])
    for S in ksizes:
        for causal in (False, True):
            n = kernel_iters(a, S, causal)
            c = [kb, "-S", str(S), "-D", str(a.head_dim), "-H", str(a.heads), "-B", "1",
                 "--dtype", a.dtype, "-n", str(n), "-w", str(max(1, n // 20)),
                 "--peak-seconds", "0.02", "--no-unfused"] + (["--causal"] if causal else [])
            nl = CALIB_LAUNCHES if S <= 256 else 1
            runs.append(Run(f"kernel_S{S}_{'causal' if causal else 'full'}", "calib-kernel", c,
                            kind="kernel", launches=nl,
                            est_s=nl * (0.2 + est_compute_s(a, S, 1, "causal" if causal else "full",
                                                            runs=n + n // 20 + 1) - 1.5)))
    runs.append(Run("pingpong_local", "calib-link",
                    ["mpirun", "-np", "2", "--bind-to", "core", sys.executable, os.path.abspath(__file__),
                     "--pingpong-worker", "@OUT@"], kind="pingpong", est_s=8))
    # One-rank rings at shard sizes 3 x 2^k, between the validation points' sizes (powers of 2,
    # none of them 3 x 2^k): the ring's compute per kernel-bench time and its time per call
    # outside compute, by shard size (perf_model.ring_overheads interpolates between them).
    ring1 = RING1_SIZES_QUICK if q else RING1_SIZES
    it = timed_iters(a, 48, 1, target_s=CALIB_TIMED_S, lo=3, cap=CALIB_MAX_ITERS)
    runs.append(Run("ring1_S48_both", "calib-ring",
                    ["mpirun", "-np", "1"] + bench_cmd(a, 1, 48, iters=it, warmup=5),
                    problem=pm.Problem(S=48, P=1, Hq=a.heads, D=a.head_dim, dtype=a.dtype),
                    launches=CALIB_LAUNCHES, est_s=CALIB_LAUNCHES * (0.7 + it * iter_seconds(a, 48, 1))))
    for S in ring1:
        for mode in ("fwd", "bwd"):
            it = timed_iters(a, S, 1, mode=mode, target_s=CALIB_TIMED_S, lo=3, cap=CALIB_MAX_ITERS)
            nl = calib_launches(it * iter_seconds(a, S, 1, mode=mode))
            runs.append(Run(f"ring1_S{S}_{mode}", "calib-ring",
                            ["mpirun", "-np", "1"] + bench_cmd(a, 1, S, mode=mode, iters=it,
                                                               warmup=max(1, min(5, it // 20))),
                            problem=pm.Problem(S=S, P=1, Hq=a.heads, D=a.head_dim, dtype=a.dtype, mode=mode),
                            launches=nl, est_s=nl * (est_compute_s(a, S, 1, mode=mode, runs=it + 1) - 0.8)))
    if a.cores >= 2:
        # the software cost of a ring message: a two-rank ring of almost no work
        for mode in ("fwd", "bwd"):
            S2 = ringp_calib_S(2)
            it = timed_iters(a, S2, 2, mode=mode, target_s=MSG_TIMED_S, lo=3, cap=CALIB_MAX_ITERS)
            runs.append(Run(f"ring2_S{S2}_{mode}", "calib-ring",
                            ["mpirun", "-np", "2", "--bind-to", "core"] + bench_cmd(a, 2, S2, mode=mode, iters=it,
                                                                                    warmup=5),
                            problem=pm.Problem(S=S2, P=2, Hq=a.heads, D=a.head_dim, dtype=a.dtype, mode=mode),
                            launches=MSG_LAUNCHES,
                            est_s=MSG_LAUNCHES * (0.8 + it * iter_seconds(a, S2, 2, mode=mode))))
    # More ranks than cores: the cost of a message when ranks time-share the cores (P-rank
    # rings of almost no work) and the CPU throughput of P busy processes on the cores (P
    # concurrent copies of the kernel bench against one alone).
    for P in oversubscribed_ranks(a):
        Sp = ringp_calib_S(P)
        for mode in ("fwd", "bwd"):
            it = timed_iters(a, Sp, P, mode=mode, target_s=MSG_TIMED_S, lo=3, cap=CALIB_MAX_ITERS)
            runs.append(Run(f"ring{P}_S{Sp}_{mode}", "calib-ring",
                            ["mpirun", "-np", str(P), "--bind-to", "none"] + bench_cmd(a, P, Sp, mode=mode, iters=it,
                                                                                       warmup=5),
                            problem=pm.Problem(S=Sp, P=P, Hq=a.heads, D=a.head_dim, dtype=a.dtype, mode=mode),
                            launches=MSG_LAUNCHES,
                            est_s=MSG_LAUNCHES * (1.0 + 2 * it * iter_seconds(a, Sp, P, mode=mode))))
        n_conc = 20 if P <= 4 else 10
        runs.append(Run(f"kernel_concurrent_P{P}_S{CONC_S}", "calib-share",
                        ["mpirun", "-np", str(P), "--bind-to", "none", kb, "-S", str(CONC_S), "-D", str(a.head_dim),
                         "-H", str(a.heads), "-B", "1", "--dtype", a.dtype, "-n", str(n_conc), "-w", "1",
                         "--peak-seconds", "0.05", "--no-unfused"],
                        kind="kernel_concurrent", meta={"copies": P, "S": CONC_S},
                        est_s=2 + est_compute_s(a, CONC_S, 1, "full", runs=n_conc + 1) * P / a.cores))
    seen = set()

    def add(sweep, P, S, scheme="zigzag", mask="causal", U=1, netns=None, tag=""):
        key = (P, S, scheme, mask, U, json.dumps(netns, sort_keys=True))
        name = f"P{P}_S{S}_{scheme}_{mask}" + (f"_U{U}" if U > 1 else "") + tag
        if key in seen:
            for r in runs:
                if r.name == name:
                    r.meta.setdefault("sweeps", [r.sweep]).append(sweep)
            return
        seen.add(key)
        prob = pm.Problem(S=S, P=P, Hq=a.heads, D=a.head_dim, dtype=a.dtype, mask=mask,
                          scheme=scheme, U=U)
        # Short problems repeat until about 0.3 s is timed (one iteration of a few ms is noise).
        iters = a.iters if netns else timed_iters(a, S, P, mask)
        cmd = bench_cmd(a, P, S, scheme, mask, U=U, placement="auto" if netns else "ulysses",
                        iters=iters)
        # short points: the median of several launches (one launch of a tiny ring with more
        # ranks than cores varies by 10-30 % with where the scheduler puts its ranks)
        nl = POINT_LAUNCHES if not netns and iter_seconds(a, S, P, mask) < POINT_SHORT_ITER_S else 1
        if netns:
            full = ["bash", os.path.join(ROOT, "scripts", "netns_mpirun.sh"), "-N", str(netns["hosts"]),
                    "-s", str(netns["slots"]), "--rate", netns["rate"], "--", "-x", "OMP_NUM_THREADS=1",
                    "-x", "RINGATTN_TIMEOUT_MS"] + cmd
            kv = 2.0 * S * a.heads * a.head_dim * pm.DTYPE_BYTES[a.dtype] / max(P // U, 1)
            per_iter = 4 * kv * (P // U - 1) / rate_bytes_per_s(netns["rate"])
            est = 6 + (a.iters + 1) * per_iter + est_compute_s(a, S, P) - 1.5
        else:
            full = ["mpirun", "-np", str(P), "--bind-to", "core" if P <= a.cores else "none"] + cmd
            est = nl * (est_compute_s(a, S, P, runs=iters + 1) - 0.8)
        runs.append(Run(name, sweep, full, problem=prob, netns=netns, est_s=est,
                        meta={"sweeps": [sweep]}, launches=nl))

    S0 = 2048 if q else 4096
    n0 = 512 if q else 1024
    if "strong" in a.sweeps:
        for P in a.ranks:
            add("strong", P, S0)
    if "weak" in a.sweeps:
        for P in a.ranks:
            add("weak", P, n0 * P)
    if "seq" in a.sweeps:
        for S in ([512, 1024, 2048, 4096] if q else [1024, 2048, 4096, 8192]):
            add("seq", 2, S)
    if "schemes" in a.sweeps:
        for P in (2, 4):
            for scheme in pm.SCHEMES:
                add("schemes", P, S0, scheme)
        add("schemes", 2, S0, "zigzag", "full")
    if "tiny" in a.sweeps:
        for P in (2, 4):
            add("tiny", P, 128)
    if "netns" in a.sweeps:
        for rate in a.rates:
            bw = rate_bytes_per_s(rate)
            sizes = [1024] if q else ([1024, 4096] if bw < 20e6 else [2048, 4096, 8192])
            ns = {"hosts": 2, "slots": 1, "rate": rate}
            runs.append(Run(f"pingpong_netns_{rate}", "calib-link",
                            ["bash", os.path.join(ROOT, "scripts", "netns_mpirun.sh"), "-N", "2", "-s", "1",
                             "--rate", rate, "--", sys.executable, os.path.abspath(__file__),
                             "--pingpong-worker", "@OUT@", "--pingpong-sizes", "8,1048576,4194304"],
                            kind="pingpong", netns=ns, est_s=8 + 3 * 1.4e6 * 3 / bw * 2))
            for S in sizes:
                add("netns", 2, S, netns=ns, tag=f"_{rate}")
    if "hybrid" in a.sweeps:
        rate = a.rates[0]
        bw = rate_bytes_per_s(rate)
        ns = {"hosts": 2, "slots": 2, "rate": rate}
        runs.append(Run(f"pingpong_netns2x2_{rate}", "calib-link",
                        ["bash", os.path.join(ROOT, "scripts", "netns_mpirun.sh"), "-N", "2", "-s", "2",
                         "--rate", rate, "--", sys.executable, os.path.abspath(__file__),
                         "--pingpong-worker", "@OUT@", "--pingpong-sizes", "8,1048576,4194304"],
                        kind="pingpong", netns=ns, est_s=10 + 3 * 1.4e6 * 3 / bw * 2))
        S = 1024 if q else 2048
        for U in (1, 2):
            add("hybrid", 4, S, U=U, netns=ns, tag=f"_{rate}_2x2")
    return runs


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
def fmt_s(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


VERBOSE_RE = re.compile(r"rank (\d+) (forward|backward): total ([0-9.]+) ms compute ([0-9.]+) ms "
                        r"\(device [0-9.]+ ms\) wait ([0-9.]+) ms sent ([0-9.]+) MB")


CONC_RE = re.compile(r"^fused_(fwd|bwd)\s+\d+\s+\d+\s+\d+\s+\d+\s+\d+\s+\S+\s+\S+\s+([0-9.]+)\s+[0-9.]+\s+([0-9.]+)",
                     re.M)


def parse_verbose(text: str) -> Dict[int, dict]:
    ranks: Dict[int, dict] = {}
    for m in VERBOSE_RE.finditer(text):
        r = ranks.setdefault(int(m.group(1)), {"total_ms": 0.0, "compute_ms": 0.0, "wait_ms": 0.0, "sent_MB": 0.0})
        r["total_ms"] += float(m.group(3))
        r["compute_ms"] += float(m.group(4))
        r["wait_ms"] += float(m.group(5))
        r["sent_MB"] += float(m.group(6))
    return ranks


def median_launch(results: List[list]) -> int:
    """Index of the median launch of a bench run by its time (the lower median for an even
    count): the launch whose result (time, overlap, per-rank split) the model is compared with."""
    order = sorted(range(len(results)), key=lambda i: results[i][0]["time_ms"])
    return order[(len(order) - 1) // 2]


def merge_kernel_launches(results: List[dict]) -> dict:
    """Kernel bench launches (each reports its median iteration) -> one result whose time and
    throughput per pass are the medians over launches (fields of the first launch otherwise)."""
    out = json.loads(json.dumps(results[0]))
    for key in ("fused_fwd", "fused_bwd"):
        for f in ("time_ms", "best_ms", "gflops"):
            vals = [r[key][f] for r in results if f in r.get(key, {})]
            if vals:
                out[key][f] = statistics.median(vals)
        out[key]["launches_gflops"] = [r[key]["gflops"] for r in results]
    out["launches"] = len(results)
    return out


def execute(run: Run, raw: str, timeout: float) -> dict:
    base = os.path.join(raw, run.name)
    out_json = base + ".json"
    env = dict(os.environ)
    env.update(MPI_ENV)
    t0 = time.time()
    n = max(1, run.launches)
    texts, results, rc, cmd0 = [], [], 0, None
    for li in range(n):
        # launch li writes NAME.json (one launch) or NAME.launchI.json; NAME.json is rewritten
        # below with the kept (median) result
        lj = out_json if n == 1 else f"{base}.launch{li}.json"
        cmd = [lj if c == "@OUT@" else c for c in run.cmd]
        if run.kind in ("bench", "kernel"):
            cmd = cmd + ["--json", lj]
        cmd0 = cmd0 or cmd
        try:
            p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=timeout)
            rc, text = p.returncode, p.stdout
        except subprocess.TimeoutExpired as e:
            rc, text = 124, (e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")) + "\n[timeout]"
        texts.append("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n" + text)
        if rc != 0:
            break
        if os.path.exists(lj):
            with open(lj) as f:
                results.append(json.load(f))
        else:
            results.append(None)
    elapsed = time.time() - t0
    with open(base + ".log", "w") as f:
        f.write("\n".join(texts))
    rec = {"name": run.name, "sweep": run.sweep, "kind": run.kind, "rc": rc, "elapsed_s": elapsed,
           "command": " ".join(shlex.quote(c) for c in cmd0), "netns": run.netns, "meta": run.meta,
           "launches": n}
    if rc == 77:
        rec["skipped"] = "netns_mpirun.sh cannot emulate hosts here (needs root)"
    keep = 0
    if rc == 0 and results and all(r is not None for r in results):
        if run.kind == "bench":
            keep = median_launch(results)
            rec["launch_times_ms"] = [r[0]["time_ms"] for r in results]
            rec["kept_launch"] = keep
            rec["result"] = results[keep]
        elif run.kind == "kernel":
            rec["result"] = merge_kernel_launches(results) if n > 1 else results[0]
        else:
            rec["result"] = results[keep]
        if n > 1:
            with open(out_json, "w") as f:
                json.dump(rec["result"], f)
    text = texts[keep].split("\n", 1)[1] if texts else ""
    if rc == 0 and run.kind == "kernel_concurrent":
        copies = [{"pass": m.group(1), "time_ms": float(m.group(2)), "gflops": float(m.group(3))}
                  for m in CONC_RE.finditer(text)]
        rec["result"] = {"copies": run.meta["copies"], "S": run.meta["S"], "rows": copies}
    if rc == 0 and run.kind == "bench" and "result" in rec:
        rec["ranks"] = parse_verbose(text)
        hb = re.findall(r"host(\d+) \(\S+\) sent (\d+) bytes", text)
        if hb:
            rec["host_sent_bytes"] = {int(h): int(b) for h, b in hb}
    with open(base + ".rec.json", "w") as f:
        json.dump(rec, f, indent=1)
    return rec


def run_all(a, runs: List[Run], raw: str) -> List[dict]:
    recs = []
    total_est = sum(r.est_s for r in runs)
    done_est, done_real = 0.0, 0.0
    t_start = time.time()
    print(f"scaling: {len(runs)} runs, estimated {fmt_s(total_est)} on {a.cores} cores", flush=True)
    for i, run in enumerate(runs):
        rec = execute(run, raw, a.timeout)
        recs.append(rec)
        done_est += run.est_s
        done_real += rec["elapsed_s"]
        left_est = (total_est - done_est) * (done_real / done_est if done_est > 0 else 1.0)
        res = rec.get("result")
        what = ""
        if rec.get("skipped"):
            what = "skipped: " + rec["skipped"]
        elif rec["rc"] != 0:
            what = f"FAILED rc={rec['rc']} (see {run.name}.log)"
        elif run.kind == "bench":
            what = f"{res[0]['time_ms']:.1f} ms/iter"
        elif run.kind == "kernel":
            what = f"fwd {res['fused_fwd']['gflops']:.1f} bwd {res['fused_bwd']['gflops']:.1f} GFLOP/s"
        elif run.kind == "kernel_concurrent":
            what = f"{len(res['rows']) // 2} copies, fwd " + " ".join(
                f"{x['gflops']:.0f}" for x in res["rows"] if x["pass"] == "fwd") + " GFLOP/s"
        elif run.kind == "pingpong":
            what = ", ".join(f"{k}: {v['bandwidth_MBps']:.1f} MB/s {v['latency_us']:.0f} us"
                             for k, v in res["pairs"].items())
        print(f"[{i + 1:2d}/{len(runs)}] {run.sweep:12s} {run.name:36s} {rec['elapsed_s']:6.1f} s  {what}"
              f"  | {fmt_s(time.time() - t_start)} done, ~{fmt_s(left_est)} left", flush=True)
    return recs


# ---------------------------------------------------------------------------------------------
# Ping-pong worker (runs under mpirun)
# ---------------------------------------------------------------------------------------------
def pingpong_worker(out: str, sizes_arg: str) -> int:
    from mpi4py import MPI
    import numpy as np
    comm = MPI.COMM_WORLD
    me, n = comm.Get_rank(), comm.Get_size()
    sizes = [int(x) for x in sizes_arg.split(",")] if sizes_arg else [8, 1 << 20, 16 << 20]
    # pairs: (0, 1) always; with 4 ranks (2 hosts x 2), (0, 2) crosses hosts
    pairs = {"0-1": (0, 1)}
    if n >= 4:
        pairs["0-2"] = (0, 2)
    result = {"ranks": n, "hosts": {}, "pairs": {}}
    names = comm.allgather(MPI.Get_processor_name())
    result["hosts"] = {str(i): h for i, h in enumerate(names)}
    for label, (x, y) in pairs.items():
        rows = []
        for size in sizes:
            buf = np.zeros(max(size, 1), dtype=np.uint8)
            rbuf = np.zeros_like(buf)
            reps = 200 if size <= 4096 else 3
            comm.Barrier()
            # ping-pong: half round trip
            t_pp = None
            if me in (x, y):
                peer = y if me == x else x
                for warm in (True, False):
                    t0 = MPI.Wtime()
                    for _ in range(1 if warm else reps):
                        if me == x:
                            comm.Send(buf, dest=peer, tag=1)
                            comm.Recv(rbuf, source=peer, tag=2)
                        else:
                            comm.Recv(rbuf, source=peer, tag=1)
                            comm.Send(buf, dest=peer, tag=2)
                    t_pp = (MPI.Wtime() - t0) / (2 * (1 if warm else reps))
            comm.Barrier()
            # paired exchange, both directions at once (a ring step of two ranks)
            t_ex = None
            if me in (x, y):
                peer = y if me == x else x
                for warm in (True, False):
                    t0 = MPI.Wtime()
                    for _ in range(1 if warm else min(reps, 2)):
                        comm.Sendrecv(buf, dest=peer, sendtag=3, recvbuf=rbuf, source=peer, recvtag=3)
                    t_ex = (MPI.Wtime() - t0) / (1 if warm else min(reps, 2))
            comm.Barrier()
            if me == x:
                rows.append({"bytes": size, "pingpong_s": t_pp, "exchange_s": t_ex})
        if me == x and x != 0:
            comm.send(rows, dest=0, tag=9)
        if me == 0:
            if x != 0:
                rows = comm.recv(source=x, tag=9)
            big = [r for r in rows if r["bytes"] >= 65536]
            small = min(rows, key=lambda r: r["bytes"])

            def fit(key):
                # least squares t = lat + bytes / bw over the large sizes
                if len(big) >= 2:
                    xs = np.array([r["bytes"] for r in big], float)
                    ys = np.array([r[key] for r in big], float)
                    slope, _ = np.polyfit(xs, ys, 1)
                    return 1.0 / slope if slope > 0 else xs[-1] / ys[-1]
                return big[-1]["bytes"] / big[-1][key]
            # The model uses the one-way bandwidth (ping-pong). The paired exchange (both
            # directions of one pair at once, mpi4py Sendrecv) is recorded too: over the shaped
            # TCP links it measured about half the one-way rate, which the ring's own traffic
            # did not show (docs/scaling.md, "Validation").
            result["pairs"][label] = {"rows": rows, "latency_us": small["pingpong_s"] * 1e6,
                                      "bandwidth_MBps": fit("pingpong_s") / 1e6,
                                      "exchange_bandwidth_MBps": fit("exchange_s") / 1e6,
                                      "same_host": names[x] == names[y]}
        elif me == x and x == 0:
            pass
    if me == 0:
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
    comm.Barrier()
    return 0


# ---------------------------------------------------------------------------------------------
# Calibration -> model
# ---------------------------------------------------------------------------------------------
def calib_ring(by: Dict[str, dict], P: int, mode: str) -> Optional[dict]:
    """The P-rank message-cost ring of a run (at ringp_calib_S(P); results made before
    2026-12-05 01:00 UTC have it at S = 64 or 16 P)."""
    for S in (ringp_calib_S(P), 16 * P, 64):
        r = by.get(f"ring{P}_S{S}_{mode}")
        if r and "result" in r:
            return r
    return None


def build_machine(a, recs: List[dict]) -> (pm.Machine, dict):
    by = {r["name"]: r for r in recs}
    kt = pm.KernelTable()
    calib = {"kernels": [], "links": {}, "ring": {}}
    for r in recs:
        if r["sweep"] != "calib-kernel" or "result" not in r:
            continue
        j = r["result"]
        kind = "diag" if j["problem"]["causal"] else "full"
        S = j["problem"]["S"]
        for pas, key in (("fwd", "fused_fwd"), ("bwd", "fused_bwd")):
            gf = j[key]["gflops"]
            kt.add(a.dtype, a.head_dim, pas, kind, S, gf * 1e9)
            calib["kernels"].append({"S": S, "kind": kind, "pass": pas, "gflops": gf,
                                     "threads": j["threads"], "peak_gflops": j["peak_gflops"]})
    if not kt.points:
        raise SystemExit("scaling: no kernel calibration results; cannot build the model")
    pl = by.get("pingpong_local", {}).get("result")
    if pl:
        pr = pl["pairs"]["0-1"]
        intra = pm.Link(pr["bandwidth_MBps"] * 1e6, pr["latency_us"] * 1e-6, consumes_cpu=True)
    else:
        intra = pm.Link(5e9, 2e-6, consumes_cpu=True)
        calib["links"]["local_note"] = "no ping-pong result: 5 GB/s, 2 us assumed"
    calib["links"]["local"] = {"bandwidth_MBps": intra.bandwidth / 1e6, "latency_us": intra.latency * 1e6}
    m = pm.Machine(kernels=kt, intra=intra, cores=a.cores, tiles=None if a.block_model else pm.CPU_TILES)
    if m.tiles:
        # a partial (masked) tile's time over a full tile's of the same area, by call size
        calib["tiles"] = {"tiles": {k: list(v) for k, v in m.tiles.items()}, "partial_tile_penalty": {
            pas: [{"S": int(S), "penalty": pm.partial_tile_penalty(m, a.dtype, a.head_dim, pas, S)}
                  for S, _ in kt.points.get((a.dtype, a.head_dim, pas, "diag"), [])] for pas in ("fwd", "bwd")}}
    # ring machinery, per pass, from the one-rank rings at several shard sizes n: the ring's
    # compute (time x the bench's overlap share: the time inside its compute sections) over the
    # kernel bench's time for the same blocks is the factor at n; the rest of the call is the
    # fixed time per call at n. perf_model.ring_overheads interpolates both in log(n).
    m.factor_by_rows, m.fixed_by_rows, m.calib_heads = {}, {}, a.heads
    for mode in ("fwd", "bwd"):
        pts = []
        for r in recs:
            if (r["sweep"] == "calib-ring" and r["name"].startswith("ring1_") and r["name"].endswith("_" + mode)
                    and "result" in r):
                row = r["result"][0]
                S = row["seq"]
                prob = pm.Problem(S=S, P=1, Hq=a.heads, D=a.head_dim, dtype=a.dtype, mode=mode)
                k = pm.step_kernel_seconds(m, prob, mode, 0, 0)
                t = row["time_ms"] / 1e3
                share = min(1.0, max(0.0, row["overlap_pct"] / 100.0))
                pts.append((S, k, t, t * share / k, t * (1.0 - share)))
        pts.sort()
        if pts:
            m.factor_by_rows[mode] = [(S, f) for S, _, _, f, _ in pts]
            m.fixed_by_rows[mode] = [(S, c) for S, _, _, _, c in pts]
        # the scalar values (summary; the model uses the tables): the largest size's factor, the
        # smallest size's fixed time
        f = pts[-1][3] if pts else 1.0
        c = pts[0][4] if pts else 0.0
        calib["ring"][mode] = {"factor_largest": f, "fixed_ms_smallest": c * 1e3,
                               "points": [{"S": S, "kernel_ms": k * 1e3, "ring_ms": t * 1e3, "factor": ff,
                                           "fixed_ms": cc * 1e3} for S, k, t, ff, cc in pts]}
        if mode == "fwd":
            m.ring_factor, m.call_fixed_s = f, c
        else:
            m.ring_factor_bwd, m.call_fixed_bwd_s = f, c
    # a forward followed by a backward (mode both) beyond the two calls apart, at S = 48
    tb = by.get("ring1_S48_both", {}).get("result")
    tf_ = by.get("ring1_S48_fwd", {}).get("result")
    tbw = by.get("ring1_S48_bwd", {}).get("result")
    if tb and tf_ and tbw:
        m.both_extra_s = max(0.0, (tb[0]["time_ms"] - tf_[0]["time_ms"] - tbw[0]["time_ms"]) / 1e3)
    calib["ring"]["both_extra_ms"] = m.both_extra_s * 1e3
    # message overhead: what the two-rank rings of almost no work (forward and backward) take
    # beyond the model without it, over the model's sensitivity to it
    meas, base, slope = 0.0, 0.0, 0.0
    for mode in ("fwd", "bwd"):
        r = calib_ring(by, 2, mode)
        if not r or "result" not in r:
            continue
        prob = pm.Problem(S=r["result"][0]["seq"], P=2, Hq=a.heads, D=a.head_dim, dtype=a.dtype, mode=mode)
        m0 = pm.predict(m, prob).time_s
        m1 = pm.predict(pm_replace(m, msg_overhead_s=1e-3), prob).time_s
        meas += r["result"][0]["time_ms"] / 1e3
        base += m0
        slope += (m1 - m0) / 1e-3
    if slope > 0:
        m.msg_overhead_s = max(0.0, (meas - base) / slope)
    calib["ring"]["msg_overhead_us"] = m.msg_overhead_s * 1e6
    # more ranks than cores: the message cost at P (same method, P-rank rings of almost no work)
    # and the throughput of P concurrent kernel benches against one copy alone
    m.msg_overhead_shared, m.share_efficiency = {}, {}
    for P in oversubscribed_ranks(a):
        meas, base, slope = 0.0, 0.0, 0.0
        for mode in ("fwd", "bwd"):
            r = calib_ring(by, P, mode)
            if not r or "result" not in r:
                continue
            prob = pm.Problem(S=r["result"][0]["seq"], P=P, Hq=a.heads, D=a.head_dim, dtype=a.dtype, mode=mode)
            m0 = pm.predict(pm_replace(m, msg_overhead_shared={P: 0.0}), prob).time_s
            m1 = pm.predict(pm_replace(m, msg_overhead_shared={P: 1e-3}), prob).time_s
            meas += r["result"][0]["time_ms"] / 1e3
            base += m0
            slope += (m1 - m0) / 1e-3
        if slope > 0:
            m.msg_overhead_shared[P] = max(0.0, (meas - base) / slope)
        one = by.get(f"kernel_S{CONC_S}_full", {}).get("result")
        conc = by.get(f"kernel_concurrent_P{P}_S{CONC_S}", {}).get("result")
        if one and conc and len(conc["rows"]) == 2 * P:
            t1 = one["fused_fwd"]["time_ms"] + one["fused_bwd"]["time_ms"]
            tp = sum(x["time_ms"] for x in conc["rows"]) / P
            # ideal: P copies on `cores` cores take P / cores times as long as one alone
            m.share_efficiency[P] = t1 * P / (a.cores * tp)
    calib["shared_cores"] = {"msg_overhead_us": {str(k): v * 1e6 for k, v in m.msg_overhead_shared.items()},
                             "share_efficiency": {str(k): v for k, v in m.share_efficiency.items()}}
    return m, calib


def machine_for(a, base: pm.Machine, rec: dict, recs_by: Dict[str, dict], calib: dict) -> pm.Machine:
    ns = rec.get("netns")
    if not ns:
        return base
    from dataclasses import replace
    key = ("pingpong_netns2x2_" if ns["slots"] > 1 else "pingpong_netns_") + ns["rate"]
    pp = recs_by.get(key, {}).get("result")
    if pp and "0-2" in pp["pairs"]:
        inter_p, intra_p = pp["pairs"]["0-2"], pp["pairs"]["0-1"]
    elif pp:
        inter_p, intra_p = pp["pairs"]["0-1"], None
    else:
        inter_p, intra_p = None, None
    # Between emulated hosts ranks talk TCP (btl tcp); Open MPI here has no progress thread, so
    # a message moves only inside MPI calls: the model counts these transfers as not overlapped.
    if inter_p:
        inter = pm.Link(inter_p["bandwidth_MBps"] * 1e6, inter_p["latency_us"] * 1e-6,
                        overlaps=not a.tcp_overlaps_off)
    else:
        inter = pm.Link(rate_bytes_per_s(ns["rate"]), 1e-4, overlaps=not a.tcp_overlaps_off)
    # inside an emulated host, ranks talk TCP over loopback (btl tcp): not shaped, costs the CPU
    intra = (pm.Link(intra_p["bandwidth_MBps"] * 1e6, intra_p["latency_us"] * 1e-6, consumes_cpu=True)
             if intra_p else base.intra)
    calib["links"][key] = {"inter_MBps": inter.bandwidth / 1e6, "inter_latency_us": inter.latency * 1e6,
                           "intra_MBps": intra.bandwidth / 1e6 if intra_p else None}
    return replace(base, inter=inter, intra=intra, ranks_per_host=ns["slots"])


# ---------------------------------------------------------------------------------------------
# Summary, CSV, plots
# ---------------------------------------------------------------------------------------------
def problem_of(a, rec: dict) -> Optional[pm.Problem]:
    res = rec.get("result")
    if not res or rec["kind"] != "bench":
        return None
    row = res[0]
    return pm.Problem(S=row["seq"], P=row["ranks"], Hq=row["hq"], Hkv=row["hkv"], D=row["head_dim"],
                      dtype=row["dtype"], mask=row["mask"], scheme=row["scheme"],
                      U=row.get("ulysses_degree", 1), mode=row["mode"])


def analyse(a, recs: List[dict]) -> dict:
    base, calib = build_machine(a, recs)
    by = {r["name"]: r for r in recs}
    points = []
    for rec in recs:
        prob = problem_of(a, rec)
        if prob is None or rec["sweep"].startswith("calib"):
            continue
        m = machine_for(a, base, rec, by, calib)
        pr = pm.predict(m, prob)
        row = rec["result"][0]
        ranks = rec.get("ranks", {})
        comp = [ranks[r]["compute_ms"] for r in sorted(ranks)]
        meas_imb = max(comp) / (sum(comp) / len(comp)) if comp and sum(comp) > 0 else None
        oversub = prob.P > a.cores
        netns = rec.get("netns")
        cat = ("hybrid" if prob.U > 1 else "netns" if netns else "tiny" if prob.S <= 256
               else "oversubscribed" if oversub else "local")
        points.append({
            "case": rec["name"], "category": cat, "sweeps": rec["meta"].get("sweeps", [rec["sweep"]]),
            "P": prob.P, "U": prob.U, "S": prob.S, "seq_local": row["seq_local"], "scheme": prob.scheme,
            "mask": prob.mask, "netns": netns,
            "measured_ms": row["time_ms"], "predicted_ms": pr.time_s * 1e3,
            "error": pr.time_s * 1e3 / row["time_ms"] - 1.0,
            "measured_overlap_pct": row["overlap_pct"], "predicted_overlap_pct": pr.overlap_pct,
            "measured_imbalance": meas_imb, "predicted_imbalance": pr.imbalance,
            "measured_compute_ms_per_rank": comp, "predicted_compute_ms_per_rank": [c * 1e3 for c in pr.compute_s],
            "predicted_exposed_comm_ms": pr.exposed_comm_s * 1e3,
            "predicted_alltoall_ms": pr.alltoall_s * 1e3, "measured_alltoall_ms": row.get("alltoall_ms_max_rank"),
            "predicted_efficiency": pr.efficiency, "predicted_single_ms": pr.single_s * 1e3,
            "peak_rss_mib": row["peak_rss_mib_max_rank"], "comm_gbps": row["comm_gbps"],
            "host_sent_bytes": rec.get("host_sent_bytes"),
            "predicted_bytes_per_rank": pr.bytes_per_rank,
            "command": rec["command"],
        })

    def stats(pts):
        e = sorted(abs(p["error"]) for p in pts)
        if not e:
            return None
        worst = max(pts, key=lambda p: abs(p["error"]))
        return {"n": len(e), "median_abs_error": statistics.median(e), "worst_abs_error": e[-1],
                "worst_case": worst["case"], "within_10pct": sum(x <= 0.10 for x in e),
                "within_25pct": sum(x <= 0.25 for x in e)}

    cats = sorted({p["category"] for p in points})
    err = {"all": stats(points), **{c: stats([p for p in points if p["category"] == c]) for c in cats}}
    err["all_but_oversubscribed"] = stats([p for p in points if p["category"] != "oversubscribed"])
    # measured efficiency: T(P=1) / (min(P, cores) x T(P)) in the strong sweep
    t1 = next((p["measured_ms"] for p in points if "strong" in p["sweeps"] and p["P"] == 1), None)
    for p in points:
        if t1 and "strong" in p["sweeps"]:
            p["measured_efficiency_vs_P1"] = t1 / (min(p["P"], a.cores) * p["measured_ms"])
    return {"model": {"ring_factor_fwd": base.ring_factor, "ring_factor_bwd": base.ring_factor_bwd,
                      "factor_by_rows": base.factor_by_rows, "fixed_ms_by_rows": {
                          k: [(n, c * 1e3) for n, c in v] for k, v in (base.fixed_by_rows or {}).items()},
                      "msg_overhead_us": base.msg_overhead_s * 1e6,
                      "msg_overhead_shared_us": {str(k): v * 1e6 for k, v in (base.msg_overhead_shared or {}).items()},
                      "share_efficiency": {str(k): v for k, v in (base.share_efficiency or {}).items()},
                      "both_extra_ms": base.both_extra_s * 1e3,
                      "call_fixed_fwd_ms": base.call_fixed_s * 1e3,
                      "call_fixed_bwd_ms": (base.call_fixed_bwd_s or 0) * 1e3,
                      "cores": a.cores, "effective_cores": "min(P, cores)",
                      "tiles": base.tiles, "kernel_time": "tiles" if base.tiles else "blocks"},
            "calibration": calib, "points": points, "errors": err,
            "model_validation": [{"case": p["case"], "category": p["category"],
                                  "predicted_ms": round(p["predicted_ms"], 3),
                                  "measured_ms": round(p["measured_ms"], 3),
                                  "error": round(p["error"], 4)} for p in points]}


def write_csv(path: str, points: List[dict]) -> None:
    cols = ["case", "category", "sweeps", "P", "U", "S", "seq_local", "scheme", "mask", "measured_ms",
            "predicted_ms", "error", "measured_overlap_pct", "predicted_overlap_pct", "measured_imbalance",
            "predicted_imbalance", "predicted_exposed_comm_ms", "peak_rss_mib", "comm_gbps"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for p in points:
            w.writerow(["+".join(p[c]) if c == "sweeps" else
                        (f"{p[c]:.4g}" if isinstance(p[c], float) else p[c]) for c in cols])


def plots(a, summary: dict, out: str) -> List[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = summary["points"]
    made = []
    tag = f"{a.dtype}, H={a.heads}, D={a.head_dim}, causal; {a.cores}-core machine, 1 thread/rank"

    def sweep(name):
        return sorted([p for p in pts if name in p["sweeps"]], key=lambda p: (p["P"], p["S"]))

    def save(fig, name):
        path = os.path.join(out, name)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    st = sweep("strong")
    if st:
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
        P = [p["P"] for p in st]
        ax.plot(P, [p["measured_ms"] for p in st], "o-", label="measured")
        ax.plot(P, [p["predicted_ms"] for p in st], "s--", label="model")
        t1 = st[0]["measured_ms"] if st[0]["P"] == 1 else None
        if t1:
            ax.plot(P, [t1 / min(x, a.cores) for x in P], ":", color="gray",
                    label=f"ideal: T1 / min(P, {a.cores})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("ranks P")
        ax.set_ylabel("fwd+bwd time per iteration (ms)")
        ax.set_title(f"strong scaling, S = {st[0]['S']}")
        ax.legend(fontsize=8)
        if t1:
            bx.plot(P, [p.get("measured_efficiency_vs_P1", float("nan")) for p in st], "o-", label="measured")
        bx.plot(P, [p["predicted_efficiency"] for p in st], "s--", label="model")
        bx.axhline(1.0, color="gray", ls=":")
        bx.set_xscale("log", base=2)
        bx.set_ylim(0, 1.3)
        bx.set_xlabel("ranks P")
        bx.set_ylabel(f"efficiency vs min(P, {a.cores}) x 1 rank")
        bx.legend()
        fig.suptitle(tag, fontsize=8)
        save(fig, "strong.png")
    wk = sweep("weak")
    if wk:
        fig, ax = plt.subplots(figsize=(6, 4))
        P = [p["P"] for p in wk]
        ax.plot(P, [p["measured_ms"] for p in wk], "o-", label="measured")
        ax.plot(P, [p["predicted_ms"] for p in wk], "s--", label="model")
        if wk[0]["P"] == 1:
            t1 = wk[0]["measured_ms"]
            ax.plot(P, [t1 * x * x / min(x, a.cores) for x in P], ":", color="gray",
                    label=f"ideal: T(P=1) x P^2 / min(P, {a.cores}) (work grows as S^2)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("ranks P")
        ax.set_ylabel("time per iteration (ms)")
        ax.set_title(f"weak scaling, S / P = {wk[0]['seq_local']}")
        ax.legend(fontsize=8)
        fig.suptitle(tag, fontsize=8)
        save(fig, "weak.png")
    sq = sorted(sweep("seq"), key=lambda p: p["S"])
    if sq:
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
        S = [p["S"] for p in sq]
        ax.loglog(S, [p["measured_ms"] for p in sq], "o-", base=2, label="measured")
        ax.loglog(S, [p["predicted_ms"] for p in sq], "s--", base=2, label="model")
        ref = sq[-1]["measured_ms"]
        ax.loglog(S, [ref * (s / S[-1]) ** 2 for s in S], ":", color="gray", base=2, label="S^2 slope")
        ax.set_xlabel("sequence length S")
        ax.set_ylabel("time per iteration (ms)")
        ax.set_title(f"sequence scaling, P = {sq[0]['P']}")
        ax.legend()
        bx.plot(S, [p["measured_overlap_pct"] for p in sq], "o-", label="overlap % (measured)")
        bx.plot(S, [p["predicted_overlap_pct"] for p in sq], "s--", label="overlap % (model)")
        bx.set_xscale("log", base=2)
        bx.set_ylim(0, 105)
        bx.set_xlabel("sequence length S")
        bx.set_ylabel("overlap %")
        cx = bx.twinx()
        cx.plot(S, [p["peak_rss_mib"] for p in sq], "^-", color="tab:red", label="peak MiB per rank")
        cx.set_ylabel("peak resident MiB per rank", color="tab:red")
        bx.legend(loc="lower right", fontsize=8)
        bx.set_title("overlap and memory per rank")
        fig.suptitle(tag, fontsize=8)
        save(fig, "seq_overlap_memory.png")
    sc = [p for p in sweep("schemes") if p["mask"] == "causal"]
    if sc:
        import numpy as np
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
        labels = [f"P={p['P']}\n{p['scheme']}" for p in sc]
        x = np.arange(len(sc))
        ax.bar(x - 0.2, [p["measured_ms"] for p in sc], 0.4, label="measured")
        ax.bar(x + 0.2, [p["predicted_ms"] for p in sc], 0.4, label="model")
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylabel("time per iteration (ms)")
        ax.set_title(f"schemes, causal, S = {sc[0]['S']}")
        ax.legend()
        bx.bar(x - 0.2, [p["measured_imbalance"] or 0 for p in sc], 0.4, label="measured")
        bx.bar(x + 0.2, [p["predicted_imbalance"] for p in sc], 0.4, label="model")
        bx.axhline(1.0, color="gray", ls=":")
        bx.set_xticks(x, labels, fontsize=8)
        bx.set_ylabel("slowest rank's compute / mean")
        bx.set_title("per-rank imbalance")
        bx.legend()
        fig.suptitle(tag, fontsize=8)
        save(fig, "schemes.png")
    if pts:
        fig, ax = plt.subplots(figsize=(6.4, 5))
        marks = {"local": "o", "oversubscribed": "x", "tiny": "v", "netns": "s", "hybrid": "D"}
        for cat in sorted({p["category"] for p in pts}):
            cp = [p for p in pts if p["category"] == cat]
            ax.scatter([p["measured_ms"] for p in cp], [p["predicted_ms"] for p in cp],
                       marker=marks.get(cat, "o"), label=f"{cat} ({len(cp)})")
        lo = min(min(p["measured_ms"], p["predicted_ms"]) for p in pts) * 0.7
        hi = max(max(p["measured_ms"], p["predicted_ms"]) for p in pts) * 1.4
        xs = [lo, hi]
        ax.plot(xs, xs, "k-", lw=0.8)
        for f, ls in ((0.10, "--"), (0.25, ":")):
            ax.plot(xs, [x * (1 + f) for x in xs], "k" + ls, lw=0.6)
            ax.plot(xs, [x * (1 - f) for x in xs], "k" + ls, lw=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("measured time (ms)")
        ax.set_ylabel("predicted time (ms)")
        e = summary["errors"]["all"]
        ax.set_title(f"model vs measurement: median |err| {100 * e['median_abs_error']:.1f}%, "
                     f"worst {100 * e['worst_abs_error']:.1f}%\n(dashed +-10%, dotted +-25%)", fontsize=9)
        ax.legend(fontsize=8)
        fig.suptitle(tag, fontsize=7, y=0.995)
        save(fig, "validation.png")
    return made


# ---------------------------------------------------------------------------------------------
# Extrapolation to a cluster file (model output)
# ---------------------------------------------------------------------------------------------
def extrapolate(cluster_path: str, out: str) -> dict:
    m, c = pm.load_cluster(cluster_path)
    ex = c["extrapolation"]
    prob = ex["problem"]
    res = {"label": "MODEL OUTPUT, not measured", "cluster": os.path.relpath(cluster_path, ROOT),
           "problem": prob, "rows": [], "min_tokens_to_hide": []}
    gpn = c["gpus_per_node"]
    for S in ex["seq_lengths"]:
        for P in ex["ranks"]:
            for U in ex["ulysses_degrees"]:
                if P % U or prob["Hq"] % U or S % (2 * P) or P < U:
                    continue
                if S // P < ex.get("min_tokens_per_rank", 1):
                    continue
                p = pm.Problem(S=S, P=P, U=U, Hq=prob["Hq"], Hkv=prob["Hkv"], D=prob["D"], B=prob["B"],
                               dtype=prob["dtype"], mask=prob["mask"], scheme=prob["scheme"],
                               chunks=prob.get("chunks", 4))
                if P > ex.get("max_ranks_simulated", 1 << 30):
                    continue
                pr = pm.predict(m, p)
                res["rows"].append({"S": S, "P": P, "U": U, "tokens_per_gpu": S // P,
                                    "time_ms": pr.time_s * 1e3, "fwd_ms": pr.fwd_s * 1e3, "bwd_ms": pr.bwd_s * 1e3,
                                    "exposed_comm_ms": pr.exposed_comm_s * 1e3,
                                    "alltoall_ms": pr.alltoall_s * 1e3, "efficiency": pr.efficiency})
    for g in ex.get("gqa_ratios", [1]):
        for pas in ("fwd", "bwd"):
            for U in (1, gpn):
                p = pm.Problem(S=2 * 2 * gpn * 64, P=2 * gpn, U=U, Hq=prob["Hq"],
                               Hkv=max(prob["Hq"] // g, 1), D=prob["D"], B=prob["B"], dtype=prob["dtype"],
                               mask=prob["mask"], scheme=prob["scheme"], mode=pas)
                if prob["Hq"] % U or (p.Hkv < U and U % p.Hkv):
                    continue
                n = pm.min_tokens_to_hide(m, p, pas=pas)
                res["min_tokens_to_hide"].append({"gqa": g, "pass": pas, "U": U, "P": 2 * gpn,
                                                  "tokens_per_gpu": n})
    cc = c.get("compute_check")
    if cc:
        # The model's compute summed over ranks (no transfers) against the measured compute-only
        # rings on one H200: a check of the kernel side of the model on the GPU.
        from dataclasses import replace as _replace
        mc = _replace(m, intra=pm.Link(1e18, 0.0), inter=None)
        q = cc["problem"]
        res["compute_check"] = {"source": cc["source"], "rows": []}
        for P_s, meas in sorted(cc["ring_compute_sum_ms"].items(), key=lambda x: int(x[0])):
            p = pm.Problem(S=q["S"], P=int(P_s), Hq=q["Hq"], Hkv=q["Hkv"], D=q["D"], B=q["B"],
                           dtype=q["dtype"], mask=q["mask"], scheme=q["scheme"], chunks=q["chunks"])
            pr = pm.predict(mc, p)
            res["compute_check"]["rows"].append({
                "P": int(P_s), "predicted_compute_sum_ms": sum(pr.compute_s) * 1e3,
                "measured_compute_sum_ms": meas, "error": sum(pr.compute_s) * 1e3 / meas - 1,
                "predicted_single_ms": pr.single_s * 1e3, "measured_single_ms": cc["single_ms"]})
    with open(os.path.join(out, "extrapolation.json"), "w") as f:
        json.dump(res, f, indent=1)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for S in ex["seq_lengths"]:
        for U in ex["ulysses_degrees"]:
            rows = sorted([r for r in res["rows"] if r["S"] == S and r["U"] == U], key=lambda r: r["P"])
            if rows:
                ax.plot([r["P"] for r in rows], [r["efficiency"] for r in rows],
                        "o-" if U == 1 else "s--", label=f"S={S:,}, U={U}")
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("GPUs P")
    ax.set_ylabel("predicted efficiency (single-GPU kernels / (P x time))")
    ax.set_title(f"MODEL OUTPUT (not measured): {c.get('short_name', c['name'])}\n{prob['dtype']}, Hq={prob['Hq']}, "
                 f"Hkv={prob['Hkv']}, D={prob['D']}, {prob['mask']} {prob['scheme']}, fwd+bwd", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "extrapolation_efficiency.png"), dpi=110)
    plt.close(fig)
    return res


# ---------------------------------------------------------------------------------------------
def git_commit() -> str:
    try:
        h = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return h + ("+uncommitted" if dirty else "")
    except OSError:
        return "unknown"


def main(argv: Optional[List[str]] = None) -> int:
    a = parse_args(argv)
    if a.pingpong_worker:
        return pingpong_worker(a.pingpong_worker, a.pingpong_sizes)
    out = os.path.abspath(a.out)
    raw = os.path.join(out, "raw")
    only_extrapolate = bool(a.extrapolate) and a.no_sweeps
    runs = plan_runs(a)
    if a.dry_run:
        print(f"scaling: {len(runs)} runs, estimated {fmt_s(sum(r.est_s for r in runs))} on {a.cores} cores")
        for r in runs:
            print(f"  {r.sweep:12s} {r.name:36s} ~{fmt_s(r.est_s):>6s}  {' '.join(r.cmd)}")
        return 0
    os.makedirs(raw, exist_ok=True)
    if only_extrapolate:
        res = extrapolate(os.path.abspath(a.extrapolate), out)
        print(f"scaling: {len(res['rows'])} extrapolated rows -> {out}/extrapolation.json (model output)")
        return 0
    if a.replot:
        recs = []
        for f in sorted(os.listdir(raw)):
            if f.endswith(".rec.json"):
                with open(os.path.join(raw, f)) as fh:
                    recs.append(json.load(fh))
        order = {r.name: i for i, r in enumerate(runs)}
        recs.sort(key=lambda r: order.get(r["name"], 1 << 30))
    else:
        for tool in ("ringattn_bench", "ringattn_kernel_bench"):
            if not os.access(os.path.join(a.build, "examples", tool), os.X_OK):
                print(f"scaling: {a.build}/examples/{tool} not found (build first)", file=sys.stderr)
                return 2
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        recs = run_all(a, runs, raw)
    summary = analyse(a, recs)
    summary["meta"] = {
        "command": "/usr/bin/python3 scripts/scaling.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:])),
        "commit": git_commit(), "cores": a.cores,
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
        "quick": a.quick, "dtype": a.dtype, "heads": a.heads, "head_dim": a.head_dim, "iters": a.iters,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "failed_runs": [r["name"] for r in recs if r["rc"] not in (0, 77)],
        "skipped_runs": [r["name"] for r in recs if r["rc"] == 77],
    }
    if not a.replot:
        summary["meta"]["started"] = started
    if a.extrapolate:
        summary["extrapolation"] = extrapolate(os.path.abspath(a.extrapolate), out)
    made = plots(a, summary, out)
    write_csv(os.path.join(out, "results.csv"), summary["points"])
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    e = summary["errors"]
    print("scaling: model vs measurement (|predicted / measured - 1|):")
    for k, v in e.items():
        if v:
            print(f"  {k:24s} n={v['n']:2d} median {100 * v['median_abs_error']:5.1f}%  worst "
                  f"{100 * v['worst_abs_error']:5.1f}% ({v['worst_case']})")
    print(f"scaling: wrote {out}/summary.json, results.csv, " + ", ".join(os.path.basename(p) for p in made))
    return 1 if summary["meta"]["failed_runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
