#!/usr/bin/env python3
"""Performance model of ringattn's ring and hybrid (Ulysses x ring) layouts.

Inputs (docs/scaling.md, "The performance model"):
  - kernel throughput per (dtype, head dim, pass fwd|bwd, tile kind full|diag, block size), as
    ringattn_kernel_bench measures it (FLOPs by DESIGN.md's rule: forward 4*B*Hq*S^2*D, half for
    a causal "diag" block, backward 2.5x forward);
  - links: bandwidth (bytes/s, one direction) and latency (s per message) inside a host and
    between hosts, measured by a ping-pong in the same run or given for a target cluster;
  - the ring machinery's cost beyond the kernels: a factor on kernel time (merges, casts, Delta,
    chunked calls) and a fixed time per ring call, per pass and by shard size (rows per ring
    rank), measured by one-rank rings at several sizes in the same run;
  - with more ranks than cores: the cost of a message (measured on P-rank rings of almost no
    work) and the throughput of P busy processes on the cores (P concurrent kernel benches);
  - P, U, S, B, Hq, Hkv, D, dtype, scheme, mask, chunks, ranks per host, shared cores.

Output (`predict`): time of forward, backward or both (the slowest rank, as ringattn_bench
reports it), each rank's compute and exposed wait, exposed communication, the all-to-all time,
efficiency against one device doing the whole problem with the same kernels, and the imbalance
(slowest rank's compute / mean compute).

How a call is modelled:
  - Work: every rank's rows are runs of global positions (contiguous, zigzag, striped; DESIGN.md).
    The block of a ring step is cut into pairs of runs; under a causal mask a pair is full
    (every query after every key), hidden (skipped, no compute), or a diagonal block (the
    kernel's partially masked tiles; cost measured by the causal kernel bench). A step whose pairs
    are all hidden is skipped, but its data still travels (docs/ring.md, "What runs").
  - Kernel time of a step: by default the visible FLOPs of its pairs at the pair's throughput;
    with `Machine.tiles` (the CPU kernels) call by call (chunks) and tile by tile, partial
    (masked) tiles computed whole at a penalty derived from the causal kernel bench
    (`step_kernel_seconds`; docs/scaling.md, "Tile accounting").
  - Time of a step on a rank: kernel time of its pairs x `ring_factor`, plus, on links that
    consume the rank's own core (shared memory on a CPU: MPI copies inside its calls), the copy.
  - The ring's dependencies, simulated per rank: the exchange for step i+1 is posted when step i
    starts; it completes `latency + bytes / bandwidth` after both partners have posted it; step
    i+1 starts when the rank's compute of step i is done and both its send and receive finished.
    Ranks may run a step apart, so imbalance is what the simulation gives, not a per-step max.
  - Backward: the float32 dK/dV accumulators travel one step behind, chunk by chunk; chunk c of
    step i >= 2 waits for chunk c's accumulator from the previous rank; each rank's outgoing link
    is a FIFO shared by K/V blocks and gradient chunks; after the last step the accumulators make
    their last hop to the owner. Gradients make P-1 hops per block (R-1 in the hybrid).
  - Hybrid (U > 1): the ring runs over R = P / U ranks with rows S / R at Hq / U heads; the
    all-to-alls (docs/ring.md, "Ulysses and hybrid": forward (U-1)/U (2Q + KV + 4BSHq)/P bytes
    per rank, backward (U-1)/U (4Q + 2KV + 4BSHq)/P) run before and after the ring, not
    overlapped, as U-1 paired exchanges over the intra-group link.
  - Links whose transfers do not overlap compute: shared memory between CPU ranks (the copy
    runs on the receiver's core) and TCP without an MPI progress thread (`overlaps=False`: the
    data moves only inside MPI calls); their transfer time adds to the receiving rank's step.
    Every ring message also costs `msg_overhead_s` (post, test, wait).
  - Shared cores (CPU ranks on one machine, `cores`): a pass lasts at least the CPU work of all
    ranks over the cores (work conserving: effective cores = min(P, cores); ranks that wait
    sleep and leave their core) and at least what the dependencies give with a core per rank.
    With P > cores the CPU work includes every message's measured cost (a wait spins 200 us
    before it sleeps, comm/poll.h), and the cores deliver the measured share efficiency of P
    concurrent processes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

DTYPE_BYTES = {"f32": 4, "f16": 2, "bf16": 2}
SCHEMES = ("contiguous", "zigzag", "striped")
MASKS = ("full", "causal")


# ---------------------------------------------------------------------------------------------
# Kernel throughput
# ---------------------------------------------------------------------------------------------
class KernelTable:
    """FLOP/s per rank by (dtype, D, pass, kind) as a function of the block size.

    points[(dtype, D, pass, kind)] = sorted [(size, flops_per_s), ...]; between sizes the
    throughput is interpolated linearly in log(size), outside it is clamped to the end points.
    A missing head dim falls back to the nearest measured one (same dtype).
    """

    def __init__(self, points: Optional[Dict[Tuple[str, int, str, str], List[Tuple[float, float]]]] = None):
        self.points: Dict[Tuple[str, int, str, str], List[Tuple[float, float]]] = {}
        for key, pts in (points or {}).items():
            for s, f in pts:
                self.add(*key, s, f)

    def add(self, dtype: str, d: int, pas: str, kind: str, size: float, flops: float) -> None:
        if pas not in ("fwd", "bwd") or kind not in ("full", "diag"):
            raise ValueError(f"pass fwd|bwd and kind full|diag, got {pas}, {kind}")
        if size <= 0 or flops <= 0:
            raise ValueError("size and throughput must be positive")
        pts = self.points.setdefault((dtype, int(d), pas, kind), [])
        pts.append((float(size), float(flops)))
        pts.sort()

    def flops(self, dtype: str, d: int, pas: str, kind: str, size: float) -> float:
        key = (dtype, int(d), pas, kind)
        full_key = (dtype, int(d), pas, "full")
        if kind == "diag" and key in self.points and full_key in self.points:
            m0, f0 = self.points[key][-1]
            if size > m0:
                # Beyond the largest measured causal block: its partially masked tiles form a
                # band along the diagonal whose cost grows as m, the rest as m^2 at the full
                # throughput: F_diag(m) = F_full(m) * (m/2) / (m/2 + e), with the band's
                # equivalent width e = m0/2 (F_full(m0)/F_diag(m0) - 1) from the largest point.
                ff0 = self._interp(self.points[full_key], m0)
                e = max(0.0, m0 / 2 * (ff0 / f0 - 1))
                return self._interp(self.points[full_key], size) * (size / 2) / (size / 2 + e)
        if key not in self.points:
            ds = [k[1] for k in self.points if k[0] == dtype and k[2] == pas and k[3] == kind]
            if not ds:
                raise KeyError(f"no kernel throughput for {dtype} {pas} {kind}")
            key = (dtype, min(ds, key=lambda x: abs(x - d)), pas, kind)
        return self._interp(self.points[key], size)

    @staticmethod
    def _interp(pts: List[Tuple[float, float]], size: float) -> float:
        if size <= pts[0][0]:
            return pts[0][1]
        if size >= pts[-1][0]:
            return pts[-1][1]
        for (s0, f0), (s1, f1) in zip(pts, pts[1:]):
            if s0 <= size <= s1:
                w = (math.log(size) - math.log(s0)) / (math.log(s1) - math.log(s0))
                return f0 + w * (f1 - f0)
        return pts[-1][1]

    def to_json(self) -> list:
        return [{"dtype": k[0], "head_dim": k[1], "pass": k[2], "kind": k[3], "size": s,
                 "flops_per_s": f} for k, pts in sorted(self.points.items()) for s, f in pts]

    @staticmethod
    def from_json(rows: list) -> "KernelTable":
        t = KernelTable()
        for r in rows:
            t.add(r["dtype"], r["head_dim"], r["pass"], r["kind"], r["size"], r["flops_per_s"])
        return t


@dataclass
class Link:
    bandwidth: float            # bytes/s, one direction, one flow
    latency: float = 0.0        # s per message
    consumes_cpu: bool = False  # the copy runs on the receiving rank's core (CPU shared memory)
    overlaps: bool = True       # False: the transfer moves only while the rank is inside MPI
                                # (TCP without a progress thread): it adds to the step's time

    def time(self, nbytes: float, messages: int = 1) -> float:
        if nbytes <= 0 and messages <= 0:
            return 0.0
        return messages * self.latency + nbytes / self.bandwidth


@dataclass
class Machine:
    kernels: KernelTable
    intra: Link                          # between ranks of one host
    inter: Optional[Link] = None         # between hosts (None: one host)
    ranks_per_host: Optional[int] = None  # None: all ranks on one host
    cores: Optional[int] = None          # shared cores of the whole machine (CPU emulation); None: a device per rank
    ring_factor: float = 1.0             # ring compute / kernel-bench time (merges, chunks, casts)
    ring_factor_bwd: Optional[float] = None  # the backward's, when it differs (None: ring_factor)
    call_fixed_s: float = 0.0            # fixed time per ring call (agreement, plan lookup, Delta, cast)
    call_fixed_bwd_s: Optional[float] = None  # the backward's, when it differs
    kernel_call_s: float = 0.0           # fixed time per kernel call (chunks x visible steps)
    inter_flows_share: bool = True       # flows leaving a host share its link
    simulate_max_ring: int = 64          # larger rings use the lockstep closed form
    msg_overhead_s: float = 0.0          # software cost of one ring message beyond the link's latency
    both_extra_s: float = 0.0            # a forward followed by a backward costs this beyond the two calls
    # Calibrated by size (CPU runs; None: the constants above). Per pass, sorted [(rows, value)]:
    # the ring's compute / kernel-bench time at that many rows per ring rank, and the time per
    # call outside compute (agreement, Delta, casts) at that many rows x heads / calib_heads,
    # both from one-rank rings; interpolated in log(rows), clamped at the ends.
    factor_by_rows: Optional[Dict[str, List[Tuple[float, float]]]] = None
    fixed_by_rows: Optional[Dict[str, List[Tuple[float, float]]]] = None
    calib_heads: int = 0
    # Ranks sharing cores (P > cores): the software cost of one message (post, test, wait, and
    # the scheduling of a descheduled peer) by P, measured on P-rank rings of almost no work,
    # and the CPU throughput of P busy processes on the cores relative to one process per core
    # (P concurrent copies of the kernel bench).
    msg_overhead_shared: Optional[Dict[int, float]] = None
    share_efficiency: Optional[Dict[int, float]] = None
    # Tile accounting (step_kernel_seconds): per pass the kernel's (query rows, key rows) per
    # tile; None: the block model (visible FLOPs of each run pair at the pair's throughput).
    tiles: Optional[Dict[str, Tuple[int, int]]] = None


# The CPU kernels' tiles (kernels/cpu/attention_forward.cpp, attention_backward.cpp: kBlockQ, kBlockK)
CPU_TILES = {"fwd": (128, 64), "bwd": (64, 128)}


@dataclass
class Problem:
    S: int
    P: int
    Hq: int = 8
    Hkv: int = 0
    D: int = 64
    B: int = 1
    dtype: str = "bf16"
    mask: str = "causal"
    scheme: str = "zigzag"
    U: int = 1
    chunks: int = 4
    mode: str = "both"  # fwd | bwd | both

    def __post_init__(self):
        if self.Hkv <= 0:
            self.Hkv = self.Hq
        if self.mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS} (windows are not modelled)")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}")
        if self.mode not in ("fwd", "bwd", "both"):
            raise ValueError("mode must be fwd, bwd or both")
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype must be one of {tuple(DTYPE_BYTES)}")
        if self.P < 1 or self.U < 1 or self.P % self.U:
            raise ValueError("U must divide P")
        if self.Hq % self.U:
            raise ValueError("U must divide Hq")
        parts = 2 * self.P if self.scheme == "zigzag" else self.P
        if self.S % parts:
            raise ValueError(f"S = {self.S} must be a multiple of {parts} for the model (equal shares)")

    @property
    def R(self) -> int:
        return self.P // self.U


def _by_p(table: Optional[Dict[int, float]], P: int) -> Optional[float]:
    """The value measured at P, else at the largest measured P below it, else the smallest."""
    if not table:
        return None
    keys = sorted(int(k) for k in table)
    below = [k for k in keys if k <= P]
    k = below[-1] if below else keys[0]
    return table[k] if k in table else table[str(k)]


def ring_overheads(m: Machine, p: Problem, pas: str) -> Tuple[float, float]:
    """(factor, fixed time per call) of the ring's pass `pas` at this problem's shard size."""
    rows = p.S // p.R
    factor = m.ring_factor
    fixed = m.call_fixed_s
    if pas == "bwd":
        factor = m.ring_factor_bwd if m.ring_factor_bwd is not None else m.ring_factor
        fixed = m.call_fixed_bwd_s if m.call_fixed_bwd_s is not None else m.call_fixed_s
    if m.factor_by_rows and m.factor_by_rows.get(pas):
        factor = KernelTable._interp(m.factor_by_rows[pas], rows)
    if m.fixed_by_rows and m.fixed_by_rows.get(pas):
        heads = p.Hq // p.U
        eq = rows * heads / m.calib_heads if m.calib_heads else rows
        fixed = KernelTable._interp(m.fixed_by_rows[pas], eq)
    return factor, fixed


def msg_overhead(m: Machine, p: Problem) -> float:
    """Software cost of one message: with more ranks than cores, the P-rank calibration."""
    if m.cores and p.P > m.cores:
        v = _by_p(m.msg_overhead_shared, p.P)
        if v is not None:
            return v
    return m.msg_overhead_s


def share_efficiency(m: Machine, p: Problem) -> float:
    if m.cores and p.P > m.cores:
        v = _by_p(m.share_efficiency, p.P)
        if v:
            return min(1.0, v)
    return 1.0


# ---------------------------------------------------------------------------------------------
# Work: runs of global positions and the blocks a step computes
# ---------------------------------------------------------------------------------------------
Run = Tuple[int, int, int]  # (start, count, stride)


def rank_runs(scheme: str, S: int, P: int, r: int) -> List[Run]:
    """Global positions held by rank r of P (equal shares)."""
    if scheme == "contiguous":
        n = S // P
        return [(r * n, n, 1)]
    if scheme == "zigzag":
        c = S // (2 * P)
        return [(r * c, c, 1), ((2 * P - 1 - r) * c, c, 1)]
    if scheme == "striped":
        return [(r, S // P, P)]
    raise ValueError(scheme)


def group_runs(scheme: str, S: int, P: int, U: int, g: int) -> List[Run]:
    """Rows of Ulysses group g (ranks gU..gU+U-1): its members' runs, merged where adjacent."""
    runs: List[Run] = []
    for r in range(g * U, (g + 1) * U):
        runs.extend(rank_runs(scheme, S, P, r))
    merged: List[Run] = []
    for run in sorted(runs):
        if merged and merged[-1][2] == 1 and run[2] == 1 and merged[-1][0] + merged[-1][1] == run[0]:
            merged[-1] = (merged[-1][0], merged[-1][1] + run[1], 1)
        else:
            merged.append(run)
    return merged


def pair_blocks(q: Run, k: Run, causal: bool) -> List[Tuple[str, int, int]]:
    """Blocks of one (query run, key run) pair: [(kind, rows, cols)], kind full|diag.

    diag is a causal-shaped block: m x m with the visible part a triangle (rows = cols = m).
    """
    (qs, qc, qt), (ks, kc, kt) = q, k
    if not causal:
        return [("full", qc, kc)]
    q_lo, q_hi = qs, qs + (qc - 1) * qt
    k_lo, k_hi = ks, ks + (kc - 1) * kt
    if q_lo >= k_hi:
        return [("full", qc, kc)]
    if q_hi < k_lo:
        return []
    if qt == kt and qc == kc:
        # Same stride, same length, interleaved or identical: visible iff i > j or (i == j and
        # qs >= ks): a triangle in local index space, computed with partially masked tiles.
        return [("diag", qc, kc)]
    raise ValueError(f"run pair {q} x {k} is not modelled (unequal shares)")


def step_blocks(p: Problem, r: int, s: int) -> List[Tuple[str, int, int]]:
    """Blocks that ring rank r computes against the keys of ring rank s (hybrid: groups)."""
    causal = p.mask == "causal"
    if p.U == 1:
        qr, kr = rank_runs(p.scheme, p.S, p.P, r), rank_runs(p.scheme, p.S, p.P, s)
    else:
        qr, kr = group_runs(p.scheme, p.S, p.P, p.U, r), group_runs(p.scheme, p.S, p.P, p.U, s)
    out: List[Tuple[str, int, int]] = []
    for q in qr:
        for k in kr:
            out.extend(pair_blocks(q, k, causal))
    return out


def block_flops(kind: str, rows: int, cols: int, B: int, H: int, D: int) -> float:
    """Forward FLOPs by DESIGN.md's rule (diag: half of the square)."""
    f = 4.0 * B * H * rows * cols * D
    return f / 2 if kind == "diag" else f


def kernel_seconds(m: Machine, p: Problem, pas: str, blocks) -> float:
    H = p.Hq // p.U
    t = 0.0
    for kind, rows, cols in blocks:
        f = block_flops(kind, rows, cols, p.B, H, p.D) * (2.5 if pas == "bwd" else 1.0)
        size = math.sqrt(rows * cols)
        t += f / m.kernels.flops(p.dtype, p.D, pas, kind, size)
    return t


# ---------------------------------------------------------------------------------------------
# Tile accounting (Machine.tiles; the CPU kernels): what a kernel call computes is its tiles
# ---------------------------------------------------------------------------------------------
# A kernel call tiles its query rows and key rows in local order (kernels/cpu: forward tiles of
# 128 query x 64 key rows, backward 64 x 128) and classifies every tile from the positions' range
# (kernels/common/mask.h, classify_tile: hidden if the smallest key position is after the
# largest query position, full if the largest key position is at most the smallest query
# position, else partial). Hidden tiles are skipped, full tiles run without mask arithmetic,
# partial tiles are computed whole and masked element by element. So a tile that straddles two
# runs of a zigzag shard (blocks smaller than a tile: the tiny shards) costs its whole area even
# where half of it is hidden, which the block model above (visible FLOPs only) does not see.
# The ring calls the kernel per chunk: the forward per chunk of the local query rows (all keys
# of the step's block), the backward per chunk of the block's key rows (all local query rows)
# (docs/ring.md, "What runs"; src/ring_forward.cpp, src/ring_backward.cpp); chunks split rows
# as split_size / split_offset do (kernels/common/positions.h).

def split_rows(n: int, parts: int) -> List[Tuple[int, int]]:
    """[(offset, size)] of n rows in `parts` nearly equal parts (positions.h's split rule)."""
    q, r = divmod(n, parts)
    return [(i * q + min(i, r), q + (1 if i < r else 0)) for i in range(parts)]


def runs_rows(runs: List[Run]) -> int:
    return sum(c for _, c, _ in runs)


def rows_range(runs: List[Run], lo: int, hi: int) -> Optional[Tuple[int, int]]:
    """(smallest, largest) global position of local rows [lo, hi) of the concatenated runs."""
    mn, mx, base = None, None, 0
    for s0, c, st in runs:
        a, b = max(lo, base), min(hi, base + c)
        if a < b:
            p0, p1 = s0 + (a - base) * st, s0 + (b - 1 - base) * st
            lo_p, hi_p = min(p0, p1), max(p0, p1)
            mn = lo_p if mn is None else min(mn, lo_p)
            mx = hi_p if mx is None else max(mx, hi_p)
        base += c
        if base >= hi:
            break
    return None if mn is None else (mn, mx)


def call_tile_areas(q_runs: List[Run], q_lo: int, q_hi: int, k_runs: List[Run], k_lo: int, k_hi: int,
                    tq: int, tk: int, causal: bool) -> Tuple[float, float]:
    """(area of full tiles, area of partial tiles) of one kernel call on query rows
    [q_lo, q_hi) and key rows [k_lo, k_hi) (local order), tiled from the call's first rows."""
    qt = [(a, min(a + tq, q_hi)) for a in range(q_lo, q_hi, tq)]
    kt = [(a, min(a + tk, k_hi)) for a in range(k_lo, k_hi, tk)]
    if not causal:
        return float((q_hi - q_lo) * (k_hi - k_lo)), 0.0
    kr = [rows_range(k_runs, a, b) for a, b in kt]
    full = part = 0.0
    for a, b in qt:
        qr = rows_range(q_runs, a, b)
        if qr is None:
            continue
        for (c, d), k in zip(kt, kr):
            if k is None or k[0] > qr[1]:
                continue  # hidden
            if k[1] <= qr[0]:
                full += (b - a) * (d - c)
            else:
                part += (b - a) * (d - c)
    return full, part


def bench_tile_areas(m: Machine, pas: str, S: int, causal: bool) -> Tuple[float, float]:
    """The tiles of the kernel bench's one call at S (positions 0..S-1 on both sides)."""
    tq, tk = m.tiles[pas]
    r = [(0, S, 1)]
    return call_tile_areas(r, 0, S, r, 0, S, tq, tk, causal)


def partial_tile_penalty(m: Machine, dtype: str, d: int, pas: str, size: float) -> float:
    """Time of a partial (masked) tile over a full tile of the same area, from the kernel table:
    at each measured causal size S, the causal bench's time = (full-tile area + k x partial-tile
    area) x the full bench's time per unit area at S, solved for k; interpolated in log S,
    clamped at the ends (and to [0.5, 4])."""
    key = (id(m.kernels), tuple(sorted(m.tiles.items())), dtype, int(d), pas)
    cache = m.__dict__.setdefault("_penalty_cache", {})
    if key not in cache:
        diag = m.kernels.points.get((dtype, int(d), pas, "diag"))
        if diag is None:
            ds = [k[1] for k in m.kernels.points if k[0] == dtype and k[2] == pas and k[3] == "diag"]
            if not ds:
                raise KeyError(f"no causal kernel throughput for {dtype} {pas}")
            d2 = min(ds, key=lambda x: abs(x - d))
            diag = m.kernels.points[(dtype, d2, pas, "diag")]
        pts = []
        for S, f_diag in diag:
            S = int(round(S))
            f_full = m.kernels.flops(dtype, d, pas, "full", S)
            a_full, a_part = bench_tile_areas(m, pas, S, True)
            if a_part <= 0:
                continue
            # causal time / full time per unit area = (S^2 / 2) / f_diag * f_full
            k = ((S * S / 2.0) * f_full / f_diag - a_full) / a_part
            pts.append((float(S), min(4.0, max(0.5, k))))
        cache[key] = pts or [(1.0, 1.0)]
    return KernelTable._interp(cache[key], size)


def tile_call_seconds(m: Machine, p: Problem, pas: str, q_runs, q_lo, q_hi, k_runs, k_lo, k_hi) -> float:
    if q_hi <= q_lo or k_hi <= k_lo:
        return 0.0
    tq, tk = m.tiles[pas]
    causal = p.mask == "causal"
    a_full, a_part = call_tile_areas(q_runs, q_lo, q_hi, k_runs, k_lo, k_hi, tq, tk, causal)
    if a_full + a_part <= 0:
        return 0.0
    H = p.Hq // p.U
    c = 4.0 * p.B * H * p.D * (2.5 if pas == "bwd" else 1.0)
    size = math.sqrt((q_hi - q_lo) * (k_hi - k_lo))
    f = m.kernels.flops(p.dtype, p.D, pas, "full", size)
    k = partial_tile_penalty(m, p.dtype, p.D, pas, size) if a_part > 0 else 1.0
    return c * (a_full + k * a_part) / f


def _runs_of(p: Problem, r: int) -> List[Run]:
    return rank_runs(p.scheme, p.S, p.P, r) if p.U == 1 else group_runs(p.scheme, p.S, p.P, p.U, r)


def step_kernel_seconds(m: Machine, p: Problem, pas: str, r: int, s: int) -> float:
    """Kernel time of ring rank r's step against the keys of ring rank s: with Machine.tiles,
    call by call (chunks) and tile by tile; else the block model (kernel_seconds)."""
    if not m.tiles:
        return kernel_seconds(m, p, pas, step_blocks(p, r, s))
    qr, kr = _runs_of(p, r), _runs_of(p, s)
    nq, nk = runs_rows(qr), runs_rows(kr)
    C = max(1, p.chunks)
    t = 0.0
    if pas == "fwd":
        for off, n in split_rows(nq, C):
            t += tile_call_seconds(m, p, pas, qr, off, off + n, kr, 0, nk)
    else:
        for off, n in split_rows(nk, C):
            t += tile_call_seconds(m, p, pas, qr, 0, nq, kr, off, off + n)
    return t


# ---------------------------------------------------------------------------------------------
# Bytes
# ---------------------------------------------------------------------------------------------
def kv_block_bytes(p: Problem) -> float:
    """The K/V of one ring step (the block of one ring rank, K and V messages, input dtype)."""
    b = DTYPE_BYTES[p.dtype]
    rows = p.S // p.R
    heads = max(p.Hkv // p.U, 1)  # replicated heads when Hkv < U
    return 2.0 * p.B * rows * heads * p.D * b


def grad_block_bytes(p: Problem) -> float:
    """float32 dK/dV accumulators of one block (all chunks)."""
    return kv_block_bytes(p) * 4.0 / DTYPE_BYTES[p.dtype]


def alltoall_bytes(p: Problem, pas: str) -> float:
    """Bytes one rank sends in the all-to-alls of one call (docs/ring.md, "Ulysses and hybrid")."""
    if p.U == 1:
        return 0.0
    b = DTYPE_BYTES[p.dtype]
    Q = p.B * p.S * p.Hq * p.D * b
    KV = 2.0 * p.B * p.S * p.Hkv * p.D * b
    lse = 4.0 * p.B * p.S * p.Hq
    frac = (p.U - 1) / p.U / p.P
    if pas == "fwd":
        return frac * (2 * Q + KV + lse)
    return frac * (4 * Q + 2 * KV + lse)


def ring_bytes_per_rank(p: Problem, pas: str) -> float:
    steps = p.R - 1
    if pas == "fwd":
        return steps * kv_block_bytes(p)
    return steps * (kv_block_bytes(p) + grad_block_bytes(p))


# ---------------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------------
def host_of(m: Machine, p: Problem, world_rank: int) -> int:
    rph = m.ranks_per_host or p.P
    return world_rank // rph


def ring_world_rank(p: Problem, g: int, u: int) -> int:
    """World rank of member u of ring position g (Ulysses groups of consecutive ranks)."""
    return g * p.U + u


def ring_link(m: Machine, p: Problem) -> Tuple[Link, float]:
    """The link of the ring's slowest edge and how many flows share it (per direction)."""
    rph = m.ranks_per_host or p.P
    hosts = max(1, math.ceil(p.P / rph))
    if hosts == 1 or m.inter is None or p.R == 1:
        return m.intra, 1.0
    # Ring edges g -> g+1 between groups; every ring (one per u) crosses a host boundary where
    # consecutive groups sit on different hosts. Flows leaving one host at once: the number of
    # rings (U) times the ring edges that leave it (1 per host when groups fill hosts in order).
    crossing = 0
    for g in range(p.R):
        a = host_of(m, p, ring_world_rank(p, g, 0))
        b = host_of(m, p, ring_world_rank(p, (g + 1) % p.R, 0))
        if a != b:
            crossing += 1
    if crossing == 0:
        return m.intra, 1.0
    per_host = max(1.0, crossing / hosts) * p.U
    return m.inter, (per_host if m.inter_flows_share else 1.0)


# ---------------------------------------------------------------------------------------------
# The simulation
# ---------------------------------------------------------------------------------------------
@dataclass
class PassResult:
    end: List[float]          # per ring rank, time its call ends (from its start offset)
    compute: List[float]      # per ring rank, compute seconds (kernels x factor + copies)
    wait: List[float]         # per ring rank, seconds waiting
    alltoall: float = 0.0
    fixed: float = 0.0


def simulate_pass(m: Machine, p: Problem, pas: str, start: Optional[List[float]] = None) -> PassResult:
    R, C = p.R, max(1, p.chunks)
    link, share = ring_link(m, p)
    kv_t = link.time(kv_block_bytes(p) * share) if R > 1 else 0.0
    g_chunk_t = link.time(grad_block_bytes(p) * share / C) if R > 1 else 0.0
    serial = link.consumes_cpu or not link.overlaps
    copy_kv = kv_t - link.latency if serial and R > 1 else 0.0
    copy_g = g_chunk_t - link.latency if serial and R > 1 else 0.0
    if serial:
        # A copy on the rank's own core is compute, not a transfer that could overlap.
        kv_t_net, g_t_net = link.latency, link.latency
    else:
        kv_t_net, g_t_net = kv_t, g_chunk_t
    msg = msg_overhead(m, p)
    if R > 1:
        kv_t_net += 2 * msg  # K and V: two messages
        g_t_net += msg
    t0 = list(start) if start else [0.0] * R
    # The all-to-all before the ring (hybrid): serial, over the intra-group link.
    a2a = 0.0
    if p.U > 1:
        a2a_bytes = alltoall_bytes(p, pas)
        a2a = m.intra.time(a2a_bytes, messages=2 * (p.U - 1))
        if m.cores:
            a2a *= max(1.0, p.P / m.cores) if m.intra.consumes_cpu else 1.0
        # two blocking exchanges per step of the all-to-all (in and out), U - 1 steps each
        a2a += 2 * (p.U - 1) * msg
    factor, fixed = ring_overheads(m, p, pas)
    if R > m.simulate_max_ring:
        return _lockstep_pass(m, p, pas, t0, factor, fixed, a2a, kv_t_net, g_t_net, copy_kv, copy_g)
    # per-step compute of every rank
    comp = [[0.0] * R for _ in range(R)]  # comp[i][r]
    calls = [[0] * R for _ in range(R)]
    for i in range(R):
        for r in range(R):
            blocks = step_blocks(p, r, (r - i) % R)
            if blocks:
                comp[i][r] = step_kernel_seconds(m, p, pas, r, (r - i) % R) * factor + C * m.kernel_call_s
                calls[i][r] = C
    # Receiving a block costs the receiver's core on CPU links, or its time on links that move
    # data only inside MPI calls (steps 1..R-1 receive); `xfer` keeps the latter apart (it is
    # not CPU work for the shared-cores bound).
    xfer = [0.0] * R     # every non-overlapped transfer (for the shared-cores bound)
    xfer_in = [0.0] * R  # the part inside the steps (counted in `compute` so far)
    for i in range(R):
        if i >= 1:
            for r in range(R):
                extra = copy_kv + (copy_g * C if pas == "bwd" and i >= 2 else 0.0)
                comp[i][r] += extra
                if not link.consumes_cpu:
                    xfer[r] += extra
                    xfer_in[r] += extra
    st = [t + a2a / 2 + fixed / 2 for t in t0]  # start of step 0
    compute = [0.0] * R
    link_free = [0.0] * R  # outgoing link of each rank (FIFO)
    grad_ready = None       # grad_ready[r][c]: arrival at r of chunk c's accumulator for its next step
    for i in range(R):
        ends = [0.0] * R
        chunk_end = [[0.0] * C for _ in range(R)]
        for r in range(R):
            t = st[r]
            per_chunk = comp[i][r] / C
            for c in range(C):
                if pas == "bwd" and i >= 2 and grad_ready is not None:
                    t = max(t, grad_ready[r][c])
                t += per_chunk
                chunk_end[r][c] = t
            ends[r] = t
            compute[r] += comp[i][r]
        if i == R - 1:
            # backward: the accumulators' last hop to their owners (chunk by chunk)
            if pas == "bwd" and R > 1:
                fin = [0.0] * R
                for r in range(R):
                    lf = max(link_free[r], 0.0)
                    last = 0.0
                    for c in range(C):
                        lf = max(lf, chunk_end[r][c]) + g_t_net
                        last = lf
                    nxt = (r + 1) % R
                    # the owner receives every chunk (copies, or transfers that move only
                    # inside MPI calls, take the receiver's time one after another)
                    fin[nxt] = max(fin[nxt], last + C * copy_g)
                    xfer[nxt] += C * copy_g if not link.consumes_cpu else 0.0
                ends = [max(e, f) for e, f in zip(ends, fin)]
            st = ends
            break
        nst = [0.0] * R
        # K/V exchange for step i+1, posted at step i's start: FIFO on each outgoing link
        kv_done = [0.0] * R  # send of r to r+1 complete
        for r in range(R):
            nxt = (r + 1) % R
            begin = max(st[r], st[nxt], link_free[r])
            kv_done[r] = begin + kv_t_net
            link_free[r] = kv_done[r]
        new_ready = [[0.0] * C for _ in range(R)]
        if pas == "bwd" and i >= 1:
            for r in range(R):
                nxt = (r + 1) % R
                lf = link_free[r]
                for c in range(C):
                    lf = max(lf, chunk_end[r][c]) + g_t_net
                    new_ready[nxt][c] = lf
                link_free[r] = lf
        for r in range(R):
            prv = (r - 1) % R
            nst[r] = max(ends[r], kv_done[r], kv_done[prv])
        grad_ready = new_ready
        st = nst
    end = [e + a2a / 2 + fixed / 2 for e in st]
    if m.cores and R * p.U > m.cores:
        # Shared cores: the pass lasts at least the whole CPU work over the cores (work
        # conserving: ranks that wait sleep and leave their core to the others).
        begin = min(t0)
        work = sum(compute) - sum(xfer_in)
        # on shared cores a message's software cost is CPU time too (polling, the first 200 us
        # of every wait spin: comm/poll.h): each rank's messages count in the work
        work += R * _messages(p, pas) * msg
        bound = begin + work * p.U / (m.cores * share_efficiency(m, p)) + max(xfer) + fixed + a2a
        if bound > max(end):
            end = [bound] * R
    # what the rank spent in transfers that do not overlap is waiting, not compute
    compute = [c - x for c, x in zip(compute, xfer_in)]
    wait = [end[r] - t0[r] - compute[r] - a2a - fixed for r in range(R)]
    return PassResult(end=end, compute=compute, wait=wait, alltoall=a2a, fixed=fixed)


def _messages(p: Problem, pas: str) -> int:
    """Ring messages a rank waits for in one pass: K and V per step, and in the backward the
    accumulators chunk by chunk (one step behind, plus the last hop to the owner)."""
    steps = p.R - 1
    return steps * (2 + (max(1, p.chunks) if pas == "bwd" else 0))


def _class_costs(m: Machine, p: Problem, pas: str, factor: float) -> Tuple[float, float, float]:
    """Compute of a step against an earlier ring rank, the own block, a later ring rank.

    With equal shares these three classes cover every (rank, step) of every scheme: the blocks
    of rank r against rank s depend only on the sign of r - s (zigzag: two full half-chunk
    blocks either way; striped: a triangle with or without its diagonal; contiguous: full,
    diagonal or hidden)."""
    R, C = p.R, max(1, p.chunks)

    def cost(r, s):
        b = step_blocks(p, r, s)
        return step_kernel_seconds(m, p, pas, r, s) * factor + C * m.kernel_call_s if b else 0.0

    if R == 1:
        return 0.0, cost(0, 0), 0.0
    return cost(1, 0), cost(0, 0), cost(0, 1)


def _lockstep_pass(m, p, pas, t0, factor, fixed, a2a, kv_t, g_chunk_t, copy_kv, copy_g):
    """Large rings: every rank advances in lockstep; a step lasts as long as the slowest rank's
    compute or the link's traffic of the step, whichever is longer. Rank r makes r steps against
    earlier ranks and R-1-r against later ones (used for each rank's compute)."""
    R, C = p.R, max(1, p.chunks)
    lt, eq, gt = _class_costs(m, p, pas, factor)
    recv = copy_kv + (copy_g * C if pas == "bwd" else 0.0)
    link = kv_t + (g_chunk_t * C if pas == "bwd" else 0.0)
    step0 = max(eq, link)
    steps = [max(max(lt, gt) + recv, link) for _ in range(R - 1)]
    tail = (g_chunk_t + C * copy_g) if pas == "bwd" and R > 1 else 0.0
    dur = fixed + a2a + step0 + sum(steps) + tail
    compute = [eq + r * (lt + recv) + (R - 1 - r) * (gt + recv) for r in range(R)]
    if m.cores and R * p.U > m.cores:
        work = sum(compute) + R * _messages(p, pas) * msg_overhead(m, p)
        dur = max(dur, work * p.U / (m.cores * share_efficiency(m, p)) + fixed + a2a)
    start = max(t0)
    end = [start + dur] * R
    wait = [end[r] - t0[r] - compute[r] - a2a - fixed for r in range(R)]
    return PassResult(end=end, compute=compute, wait=wait, alltoall=a2a, fixed=fixed)


@dataclass
class Prediction:
    time_s: float
    fwd_s: float
    bwd_s: float
    compute_s: List[float]        # per ring rank, both passes
    wait_s: List[float]
    alltoall_s: float
    exposed_comm_s: float         # time beyond the slowest rank's compute (+ fixed costs)
    imbalance: float              # max compute / mean compute
    efficiency: float             # single-device time / (P_eff x time), same kernels
    single_s: float               # one device, whole problem, kernel bench throughput
    effective_ranks: float
    bytes_per_rank: float
    overlap_pct: float            # compute / total, mean over ranks (the bench's column)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["time_ms"] = self.time_s * 1e3
        return d


def single_seconds(m: Machine, p: Problem, pas: str) -> float:
    """One device, the whole sequence, one kernel call (the --single baseline's kernels)."""
    q = replace(p, P=1, U=1, scheme="contiguous", chunks=1)
    return step_kernel_seconds(m, q, pas, 0, 0)


def predict(m: Machine, p: Problem) -> Prediction:
    passes = ["fwd", "bwd"] if p.mode == "both" else [p.mode]
    R = p.R
    start = [0.0] * R
    res = {}
    for pas in passes:
        res[pas] = simulate_pass(m, p, pas, start)
        start = res[pas].end
        if pas == "fwd" and len(passes) == 2:
            start = [t + m.both_extra_s for t in start]
    total = max(start)
    fwd = max(res["fwd"].end) if "fwd" in res else 0.0
    bwd = total - fwd if "fwd" in res else total
    compute = [sum(res[x].compute[r] for x in res) for r in range(R)]
    wait = [sum(res[x].wait[r] for x in res) for r in range(R)]
    a2a = sum(res[x].alltoall for x in res)
    fixed = sum(res[x].fixed for x in res) + (m.both_extra_s if len(passes) == 2 else 0.0)
    mean_c = sum(compute) / R
    single = sum(single_seconds(m, p, x) for x in passes)
    p_eff = min(p.P, m.cores) if m.cores else p.P
    # the bench's overlap: a rank's wall time inside its kernel calls / its call's time; on
    # shared cores a kernel call's wall time stretches by the ranks sharing a core
    share = max(1.0, p.P / m.cores) if m.cores else 1.0
    ov = [min(1.0, compute[r] * share / start[r]) for r in range(R)] if total > 0 else [1.0] * R
    return Prediction(
        time_s=total, fwd_s=fwd, bwd_s=bwd, compute_s=compute, wait_s=wait, alltoall_s=a2a,
        exposed_comm_s=max(0.0, total - max(compute) - fixed - a2a),
        imbalance=max(compute) / mean_c if mean_c > 0 else 1.0,
        efficiency=single / (p_eff * total) if total > 0 else 0.0,
        single_s=single, effective_ranks=p_eff,
        bytes_per_rank=sum(ring_bytes_per_rank(p, x) + alltoall_bytes(p, x) for x in passes),
        overlap_pct=100.0 * sum(ov) / len(ov),
    )


# ---------------------------------------------------------------------------------------------
# Closed forms (docs/scaling.md) and the hiding threshold
# ---------------------------------------------------------------------------------------------
def min_tokens_to_hide(m: Machine, p: Problem, link: Optional[Link] = None, pas: str = "fwd",
                       lo: int = 64, hi: int = 1 << 24) -> Optional[int]:
    """Fewest tokens per rank (S / P) from which on the transfers hide behind the kernels: the
    model's exposed communication is at most 5% of the pass's time. Fixed costs per call and per
    kernel call are left out for this question (with them, tiny shards are bound by those costs,
    not by the links); None if not reached below `hi`."""
    parts = 2 if p.scheme == "zigzag" else 1
    mm = replace(m, inter=link or m.inter, kernel_call_s=0.0, call_fixed_s=0.0, call_fixed_bwd_s=0.0,
                 fixed_by_rows=None)

    def exposed(n: int) -> bool:
        q = replace(p, S=n * p.P, mode=pas)
        pr = predict(mm, q)
        return pr.exposed_comm_s <= 0.05 * pr.time_s

    a, b = lo, hi
    a -= a % parts
    if exposed(a):
        return a
    if not exposed(b):
        return None
    while b - a > max(parts, a // 64):
        mid = (a + b) // 2
        mid -= mid % parts
        if mid <= a:
            break
        if exposed(mid):
            b = mid
        else:
            a = mid
    return b


# ---------------------------------------------------------------------------------------------
# Cluster files
# ---------------------------------------------------------------------------------------------
def load_cluster(path: str) -> Tuple[Machine, dict]:
    """A cluster description (bench/clusters/*.json): kernels, links, hosts, ring overheads."""
    with open(path) as f:
        c = json.load(f)
    kt = KernelTable()
    for r in c["kernels"]["table"]:
        kt.add(r["dtype"], r["head_dim"], r["pass"], r["kind"], r["size"], r["tflops"] * 1e12)
    links = c["links"]

    def link(name):
        L = links[name]
        return Link(bandwidth=L["bandwidth_GBps"] * 1e9 * L.get("efficiency", 1.0),
                    latency=L["latency_us"] * 1e-6, consumes_cpu=False)

    ov = c.get("ring_overheads", {})
    m = Machine(kernels=kt, intra=link("intra"), inter=link("inter"),
                ranks_per_host=c["gpus_per_node"], cores=None,
                ring_factor=ov.get("ring_factor", {}).get("value", 1.0),
                call_fixed_s=ov.get("call_fixed_us", {}).get("value", 0.0) * 1e-6,
                kernel_call_s=ov.get("kernel_call_us", {}).get("value", 0.0) * 1e-6,
                inter_flows_share=False)
    return m, c


def _selftest() -> None:  # a few known answers; tests/scaling runs the full set
    t = KernelTable({("bf16", 64, "fwd", "full"): [(1024, 1e9)]})
    assert t.flops("bf16", 64, "fwd", "full", 10) == 1e9


if __name__ == "__main__":
    _selftest()
    print("perf_model: self-test passed")
