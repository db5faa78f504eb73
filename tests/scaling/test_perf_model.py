#!/usr/bin/env python3
"""Self-test of scripts/perf_model.py (known answers on synthetic inputs) and of the argument
parsing and run plan of scripts/scaling.py. Runs no benchmark; standard library only."""
import json
import math
import re
import os
import sys
import unittest
from dataclasses import replace

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import perf_model as pm  # noqa: E402
import scaling  # noqa: E402

GF = 1e9


def flat_table(f=10 * GF, diag=None):
    t = pm.KernelTable()
    for pas in ("fwd", "bwd"):
        t.add("bf16", 64, pas, "full", 1024, f)
        t.add("bf16", 64, pas, "diag", 1024, diag or f)
    return t


def machine(**kw):
    m = pm.Machine(kernels=flat_table(), intra=pm.Link(1e15, 0.0))
    return replace(m, **kw)


class KernelTableTest(unittest.TestCase):
    def test_interpolation_in_log_size_and_clamping(self):
        t = pm.KernelTable()
        t.add("bf16", 64, "fwd", "full", 1000, 10.0)
        t.add("bf16", 64, "fwd", "full", 100000, 30.0)
        self.assertAlmostEqual(t.flops("bf16", 64, "fwd", "full", 10000), 20.0)
        self.assertEqual(t.flops("bf16", 64, "fwd", "full", 10), 10.0)
        self.assertEqual(t.flops("bf16", 64, "fwd", "full", 1e7), 30.0)
        # nearest head dim
        self.assertEqual(t.flops("bf16", 80, "fwd", "full", 10), 10.0)
        with self.assertRaises(KeyError):
            t.flops("f32", 64, "fwd", "full", 10)

    def test_diag_beyond_measured_tends_to_full(self):
        t = pm.KernelTable()
        t.add("bf16", 64, "fwd", "full", 1024, 100.0)
        t.add("bf16", 64, "fwd", "diag", 1024, 50.0)  # band width e = 512 (1 - 1) ... = 512
        self.assertAlmostEqual(t.flops("bf16", 64, "fwd", "diag", 1024), 50.0)
        # e = 1024/2 * (100/50 - 1) = 512; at m = 4096: 100 * 2048 / (2048 + 512) = 80
        self.assertAlmostEqual(t.flops("bf16", 64, "fwd", "diag", 4096), 80.0)
        self.assertGreater(t.flops("bf16", 64, "fwd", "diag", 1 << 24), 99.0)

    def test_json_round_trip(self):
        t = flat_table()
        u = pm.KernelTable.from_json(json.loads(json.dumps(t.to_json())))
        self.assertEqual(t.points, u.points)


class WorkTest(unittest.TestCase):
    def test_shards_cover_the_sequence_once(self):
        for scheme in pm.SCHEMES:
            for P in (1, 2, 3, 4, 8):
                S = 48 * P
                seen = []
                for r in range(P):
                    for s0, c, st in pm.rank_runs(scheme, S, P, r):
                        seen += [s0 + i * st for i in range(c)]
                self.assertEqual(sorted(seen), list(range(S)), (scheme, P))

    def test_causal_work_sums_to_the_whole_problem(self):
        # Sum over ranks and steps of the blocks' FLOPs = 4 B H S^2 D / 2 (DESIGN.md's rule).
        for scheme in pm.SCHEMES:
            for P, U in ((1, 1), (2, 1), (4, 1), (4, 2), (8, 4), (8, 1)):
                p = pm.Problem(S=64 * P, P=P, U=U, Hq=8, D=64, scheme=scheme)
                H = p.Hq // p.U
                total = sum(pm.block_flops(k, a, b, 1, H, 64)
                            for r in range(p.R) for s in range(p.R) for k, a, b in pm.step_blocks(p, r, s))
                self.assertAlmostEqual(total * p.U, 4.0 * 8 * p.S ** 2 * 64 / 2, delta=1.0, msg=(scheme, P, U))

    def test_full_mask_work(self):
        p = pm.Problem(S=256, P=4, mask="full", scheme="striped")
        self.assertEqual(pm.step_blocks(p, 1, 3), [("full", 64, 64)])

    def test_zigzag_steps_are_two_full_half_blocks(self):
        p = pm.Problem(S=1024, P=4)
        self.assertEqual(sorted(pm.step_blocks(p, 2, 0)), [("full", 128, 128)] * 2)
        self.assertEqual(sorted(pm.step_blocks(p, 0, 2)), [("full", 128, 128)] * 2)
        self.assertEqual(sorted(pm.step_blocks(p, 1, 1)), [("diag", 128, 128), ("diag", 128, 128), ("full", 128, 128)])

    def test_contiguous_hidden_steps(self):
        p = pm.Problem(S=1024, P=4, scheme="contiguous")
        self.assertEqual(pm.step_blocks(p, 0, 3), [])
        self.assertEqual(pm.step_blocks(p, 3, 0), [("full", 256, 256)])

    def test_unsupported(self):
        with self.assertRaises(ValueError):
            pm.Problem(S=1000, P=3)  # zigzag needs S % 2P
        with self.assertRaises(ValueError):
            pm.Problem(S=1024, P=4, U=3)
        with self.assertRaises(ValueError):
            pm.Problem(S=1024, P=4, mask="window")


class BytesTest(unittest.TestCase):
    def test_ring_and_alltoall_bytes(self):
        # docs/ring.md, "Ulysses and hybrid": KV = 2 B S Hkv D b
        S, P, H, D, b = 4096, 8, 8, 64, 2
        KV = 2 * S * H * D * b
        Q = S * H * D * b
        for U in (1, 2, 4, 8):
            p = pm.Problem(S=S, P=P, U=U, Hq=H, D=D)
            R = P // U
            self.assertAlmostEqual(pm.ring_bytes_per_rank(p, "fwd"), (R - 1) * KV / P)
            self.assertAlmostEqual(pm.ring_bytes_per_rank(p, "bwd"), (R - 1) * KV / P + (R - 1) * 2 * KV / P)
            self.assertAlmostEqual(pm.alltoall_bytes(p, "fwd"), (U - 1) / U * (2 * Q + KV + 4 * S * H) / P)
            self.assertAlmostEqual(pm.alltoall_bytes(p, "bwd"), (U - 1) / U * (4 * Q + 2 * KV + 4 * S * H) / P)
            # inter-host traffic of H hosts of U ranks: (P - U) / (P - 1) of the pure ring's
            pure = pm.ring_bytes_per_rank(pm.Problem(S=S, P=P, Hq=H, D=D), "fwd")
            self.assertAlmostEqual(U * pm.ring_bytes_per_rank(p, "fwd") / (U * pure), (P / U - 1) / (P - 1))


class PredictTest(unittest.TestCase):
    def test_compute_bound_full_mask_is_ideal(self):
        m = machine()
        for P in (1, 2, 4, 8):
            p = pm.Problem(S=1024 * P, P=P, mask="full")
            r = pm.predict(m, p)
            self.assertAlmostEqual(r.time_s, r.single_s / P, delta=1e-9 * r.single_s)
            self.assertAlmostEqual(r.efficiency, 1.0, places=6)
            self.assertAlmostEqual(r.imbalance, 1.0)

    def test_link_bound_forward_is_bytes_over_bandwidth(self):
        W = 1e6
        m = machine(kernels=flat_table(1e18), inter=pm.Link(W, 0.0), ranks_per_host=1)
        for P in (2, 4):
            p = pm.Problem(S=1024, P=P, mode="fwd")
            r = pm.predict(m, p)
            self.assertAlmostEqual(r.time_s, (P - 1) * pm.kv_block_bytes(p) / W, delta=1e-6)
            self.assertGreater(r.exposed_comm_s, 0.99 * r.time_s)

    def test_link_bound_backward_carries_float32_gradients(self):
        W = 1e6
        m = machine(kernels=flat_table(1e18), inter=pm.Link(W, 0.0), ranks_per_host=1)
        p = pm.Problem(S=1024, P=2, mode="bwd", chunks=4)
        r = pm.predict(m, p)
        # one K/V exchange, then the gradients' one hop (P - 1 = 1) after the last step
        expect = (pm.kv_block_bytes(p) + pm.grad_block_bytes(p)) / W
        self.assertAlmostEqual(r.time_s, expect, delta=1e-6)

    def test_contiguous_causal_imbalance(self):
        m = machine()
        r = pm.predict(m, pm.Problem(S=4096, P=4, scheme="contiguous"))
        self.assertAlmostEqual(r.imbalance, 3.5 / 2.0, places=6)
        z = pm.predict(m, pm.Problem(S=4096, P=4, scheme="zigzag"))
        self.assertAlmostEqual(z.imbalance, 1.0, places=6)
        self.assertLess(z.time_s, r.time_s)

    def test_shared_cores(self):
        m = machine(cores=2)
        d = machine()
        p = pm.Problem(S=4096, P=4, mask="full")
        self.assertAlmostEqual(pm.predict(m, p).time_s / pm.predict(d, p).time_s, 2.0, places=6)
        self.assertEqual(pm.predict(m, p).effective_ranks, 2)
        p2 = pm.Problem(S=4096, P=2, mask="full")
        self.assertAlmostEqual(pm.predict(m, p2).time_s, pm.predict(d, p2).time_s)

    def test_fixed_costs_and_factor(self):
        m = machine(ring_factor=1.5, call_fixed_s=0.01)
        p = pm.Problem(S=2048, P=2, mask="full", mode="fwd")
        base = pm.predict(machine(), p).time_s
        self.assertAlmostEqual(pm.predict(m, p).time_s, 1.5 * base + 0.01, delta=1e-9)

    def test_overheads_by_shard_size(self):
        # factor and fixed time per call interpolated in log(rows per ring rank), clamped
        tab = {"fwd": [(64, 2.0), (4096, 1.0)]}
        fix = {"fwd": [(64, 0.001), (4096, 0.004)]}
        m = machine(factor_by_rows=tab, fixed_by_rows=fix, calib_heads=8)
        f, c = pm.ring_overheads(m, pm.Problem(S=1024, P=2, mode="fwd"), "fwd")  # 512 rows
        self.assertAlmostEqual(f, 1.5)
        self.assertAlmostEqual(c, 0.0025)
        f, c = pm.ring_overheads(m, pm.Problem(S=64, P=2, mode="fwd"), "fwd")  # 32 rows: clamped
        self.assertEqual((f, c), (2.0, 0.001))
        # the hybrid's ring runs at Hq / U heads: its fixed time is looked up at rows x heads / 8
        f, c = pm.ring_overheads(m, pm.Problem(S=2048, P=4, U=2, mode="fwd"), "fwd")  # 1024 rows, 4 heads
        self.assertAlmostEqual(f, 1.0 + 1.0 * (math.log(4096) - math.log(1024)) / math.log(64))
        self.assertAlmostEqual(c, 0.0025)
        # the backward without a table keeps the scalar values
        self.assertEqual(pm.ring_overheads(m, pm.Problem(S=1024, P=2), "bwd"), (1.0, 0.0))
        base = pm.predict(machine(), pm.Problem(S=1024, P=2, mask="full", mode="fwd")).time_s
        self.assertAlmostEqual(pm.predict(m, pm.Problem(S=1024, P=2, mask="full", mode="fwd")).time_s,
                               1.5 * base + 0.0025, delta=1e-9)

    def test_oversubscribed_messages_and_share_efficiency(self):
        p = pm.Problem(S=4096, P=4, mask="full", mode="fwd")
        m = machine(cores=2)
        t0 = pm.predict(m, p).time_s
        # P concurrent processes reaching 80 % of the cores' throughput: the bound grows 1 / 0.8
        me = machine(cores=2, share_efficiency={4: 0.8, 8: 0.5})
        self.assertAlmostEqual(pm.predict(me, p).time_s, t0 / 0.8, delta=1e-9)
        # the P = 4 value also serves P = 6; below the smallest measured P the smallest
        self.assertEqual(pm.share_efficiency(me, replace(p, P=6, S=4800)), 0.8)
        self.assertEqual(pm.share_efficiency(me, replace(p, P=3, S=4800)), 0.8)
        self.assertEqual(pm.share_efficiency(me, replace(p, P=2)), 1.0)  # a core per rank
        # a shared-core message costs CPU time: 4 ranks x 3 steps x 2 messages (K, V) x 1 ms
        # over 2 cores
        mm = machine(cores=2, msg_overhead_shared={4: 1e-3}, msg_overhead_s=5.0)
        self.assertAlmostEqual(pm.predict(mm, p).time_s, t0 + 4 * 3 * 2 * 1e-3 / 2, delta=1e-9)
        self.assertEqual(pm.msg_overhead(mm, replace(p, P=2)), 5.0)  # not oversubscribed
        self.assertEqual(pm._messages(replace(p, mode="bwd"), "bwd"), 3 * 6)

    def test_cpu_copies_do_not_overlap(self):
        W = 1e8
        fast = machine(intra=pm.Link(W, 0.0, consumes_cpu=False))
        cpu = machine(intra=pm.Link(W, 0.0, consumes_cpu=True))
        p = pm.Problem(S=4096, P=2, mask="full", mode="fwd")
        t_fast, t_cpu = pm.predict(fast, p).time_s, pm.predict(cpu, p).time_s
        self.assertAlmostEqual(t_cpu - t_fast, pm.kv_block_bytes(p) / W, delta=1e-9)

    def test_lockstep_closed_form_matches_simulation(self):
        m = machine(kernels=flat_table(10 * GF, 7 * GF), inter=pm.Link(2e8, 1e-5), ranks_per_host=4)
        for scheme in pm.SCHEMES:
            for mode in ("fwd", "bwd"):
                p = pm.Problem(S=16 * 1024, P=16, scheme=scheme, mode=mode)
                sim = pm.predict(m, p).time_s
                closed = pm.predict(replace(m, simulate_max_ring=1), p).time_s
                self.assertLess(abs(closed / sim - 1), 0.03, (scheme, mode, sim, closed))

    def test_hybrid_halves_inter_host_steps(self):
        # 2 hosts x 2 ranks, slow inter-host link: U = 2 sends 2/3 of the pure ring's bytes per
        # host; with free compute its time is close to that ratio (flows share the host's link).
        m = machine(kernels=flat_table(1e18), intra=pm.Link(1e12, 0.0), inter=pm.Link(1e6, 0.0),
                    ranks_per_host=2)
        t1 = pm.predict(m, pm.Problem(S=2048, P=4, U=1)).time_s
        t2 = pm.predict(m, pm.Problem(S=2048, P=4, U=2)).time_s
        self.assertGreater(t1 / t2, 1.3)

    def test_min_tokens_to_hide(self):
        m = machine(kernels=flat_table(1e12), inter=pm.Link(1e9, 0.0), ranks_per_host=1)
        p = pm.Problem(S=2048, P=2, mask="full", mode="fwd")
        n = pm.min_tokens_to_hide(m, p, pas="fwd")
        # full mask forward: hidden when F / (g W) <= n, i.e. n >= 1000 (plus the 5% slack)
        self.assertIsNotNone(n)
        self.assertTrue(900 <= n <= 1100, n)


class ClusterFileTest(unittest.TestCase):
    def test_h200_file_loads_and_cites_sources(self):
        path = os.path.join(ROOT, "bench", "clusters", "h200_ib.json")
        m, c = pm.load_cluster(path)
        self.assertEqual(m.ranks_per_host, 8)
        self.assertTrue(c["kernels"]["source"])
        for name, link in c["links"].items():
            self.assertIn("source", link, name)
        for name, v in c["ring_overheads"].items():
            self.assertIn("source", v, name)
        p = pm.Problem(S=131072, P=16, Hq=32, Hkv=8, D=128)
        r = pm.predict(m, p)
        self.assertTrue(0 < r.efficiency <= 1.0)


def table_with_diag(full, diag):
    """A kernel table: per pass {size: GFLOP/s} for full and causal (diag) benches."""
    t = pm.KernelTable()
    for pas in ("fwd", "bwd"):
        for S, g in full.items():
            t.add("bf16", 64, pas, "full", S, g * GF)
        for S, g in diag.items():
            t.add("bf16", 64, pas, "diag", S, g * GF)
    return t


class TileTest(unittest.TestCase):
    def test_split_rows_is_positions_h(self):
        # split_size: n / parts, plus one for the first n % parts parts; offsets accordingly
        self.assertEqual(pm.split_rows(10, 4), [(0, 3), (3, 3), (6, 2), (8, 2)])
        self.assertEqual(pm.split_rows(64, 4), [(0, 16), (16, 16), (32, 16), (48, 16)])
        self.assertEqual(pm.split_rows(2, 4), [(0, 1), (1, 1), (2, 0), (2, 0)])

    def test_rows_range(self):
        runs = [(0, 32, 1), (96, 32, 1)]  # zigzag rank 0 of S = 128, P = 2
        self.assertEqual(pm.rows_range(runs, 0, 16), (0, 15))
        self.assertEqual(pm.rows_range(runs, 16, 48), (16, 111))
        self.assertEqual(pm.rows_range(runs, 64, 64), None)
        self.assertEqual(pm.rows_range([(1, 4, 2)], 1, 3), (3, 5))  # striped

    def test_tile_classification(self):
        # the kernel bench's causal call at S = 256 with forward tiles of 128 x 64: query tile 0
        # (0..127) sees key tiles 0, 1 partially (diagonal), 2, 3 hidden; query tile 1 sees 0, 1
        # fully and 2, 3 partially
        full, part = pm.call_tile_areas([(0, 256, 1)], 0, 256, [(0, 256, 1)], 0, 256, 128, 64, True)
        self.assertEqual((full, part), (2 * 128 * 64, 4 * 128 * 64))
        # a tile that straddles two runs is computed whole: zigzag rank 1 of S = 128 over P = 2
        # (rows 32..63, 64..95) against rank 0's keys (0..31, 96..127) in one 64-key tile: every
        # 16-row chunk sees half the keys, and the tile is partial, 16 x 64 each
        q = pm.rank_runs("zigzag", 128, 2, 1)
        k = pm.rank_runs("zigzag", 128, 2, 0)
        self.assertEqual(pm.call_tile_areas(q, 0, 16, k, 0, 64, 128, 64, True), (0.0, 16 * 64))
        # rank 0's later rows (96..127) see all of rank 1's keys: full; its early rows none: hidden
        q0, k1 = pm.rank_runs("zigzag", 128, 2, 0), pm.rank_runs("zigzag", 128, 2, 1)
        self.assertEqual(pm.call_tile_areas(q0, 48, 64, k1, 0, 64, 128, 64, True), (16 * 64, 0.0))
        self.assertEqual(pm.call_tile_areas(q0, 0, 16, k1, 0, 64, 128, 64, True), (0.0, 0.0))
        # no mask: every tile full
        self.assertEqual(pm.call_tile_areas(q0, 0, 16, k1, 0, 64, 128, 64, False), (16 * 64, 0.0))

    def test_penalty_reproduces_the_causal_bench(self):
        # At a measured causal size the tile model of the bench's own call gives the bench's time
        t = table_with_diag({16: 30, 64: 80, 256: 100, 1024: 110}, {16: 12, 64: 30, 256: 50, 1024: 80})
        m = pm.Machine(kernels=t, intra=pm.Link(1e15), tiles=pm.CPU_TILES)
        for pas in ("fwd", "bwd"):
            for S in (16, 64, 256, 1024):
                p = pm.Problem(S=S, P=1, scheme="contiguous", chunks=1, mode=pas)
                bench = pm.block_flops("diag", S, S, 1, 8, 64) * (2.5 if pas == "bwd" else 1) / \
                    t.flops("bf16", 64, pas, "diag", S)
                self.assertAlmostEqual(pm.step_kernel_seconds(m, p, pas, 0, 0) / bench, 1.0, places=9,
                                       msg=(pas, S))
            # below the tiles a causal call is one partial tile: penalty = f_full / (2 f_diag)
            self.assertAlmostEqual(pm.partial_tile_penalty(m, "bf16", 64, pas, 16), 30 / (2 * 12))
        # a full mask is the full bench, tiles or not
        p = pm.Problem(S=1024, P=2, mask="full", chunks=1, scheme="contiguous")  # one call = one block
        b = replace(m, tiles=None)
        for pas in ("fwd", "bwd"):
            self.assertAlmostEqual(pm.step_kernel_seconds(m, p, pas, 0, 1), pm.step_kernel_seconds(b, p, pas, 0, 1))

    def test_tiny_zigzag_steps_cost_whole_tiles(self):
        # S = 128 over P = 2 (32-row half-chunks, 16-row chunks, below every tile): at step 1
        # rank 1's forward computes four half-hidden 16 x 64 tiles, rank 0's two full ones; in
        # the backward (chunks of key rows) the roles swap. The block model gives both ranks the
        # same two full 32 x 32 blocks.
        t = table_with_diag({16: 40, 32: 40, 64: 40}, {16: 10, 32: 10, 64: 10})  # penalty 2
        m = pm.Machine(kernels=t, intra=pm.Link(1e15), tiles=pm.CPU_TILES)
        p = pm.Problem(S=128, P=2)
        c = 4.0 * 8 * 64 / (40 * GF)
        self.assertAlmostEqual(pm.step_kernel_seconds(m, p, "fwd", 0, 1), c * 2 * 16 * 64)
        self.assertAlmostEqual(pm.step_kernel_seconds(m, p, "fwd", 1, 0), c * 2 * 4 * 16 * 64)
        self.assertAlmostEqual(pm.step_kernel_seconds(m, p, "bwd", 0, 1), 2.5 * c * 2 * 4 * 64 * 16)
        self.assertAlmostEqual(pm.step_kernel_seconds(m, p, "bwd", 1, 0), 2.5 * c * 2 * 64 * 16)
        b = replace(m, tiles=None)
        self.assertAlmostEqual(pm.step_kernel_seconds(b, p, "fwd", 0, 1), pm.step_kernel_seconds(b, p, "fwd", 1, 0))
        # large shards: runs aligned to the tiles, so the tile model keeps the zigzag balanced
        big = pm.Problem(S=8192, P=2)
        for pas in ("fwd", "bwd"):
            self.assertAlmostEqual(pm.step_kernel_seconds(m, big, pas, 0, 1) / pm.step_kernel_seconds(m, big, pas, 1, 0),
                                   1.0, places=9)

    def test_cpu_tiles_are_the_kernels(self):
        # the tiles the model assumes are the CPU kernels' kBlockQ x kBlockK
        for pas, name in (("fwd", "attention_forward.cpp"), ("bwd", "attention_backward.cpp")):
            with open(os.path.join(ROOT, "kernels", "cpu", name)) as f:
                src = f.read()
            q = int(re.search(r"kBlockQ = (\d+);", src).group(1))
            k = int(re.search(r"kBlockK = (\d+);", src).group(1))
            self.assertEqual(pm.CPU_TILES[pas], (q, k), pas)


class ScalingArgsTest(unittest.TestCase):
    def test_defaults_and_quick(self):
        a = scaling.parse_args(["--out", "x", "--quick"])
        self.assertEqual((a.heads, a.iters, a.rates), (4, 1, ["50mbit"]))
        self.assertEqual(a.sweeps, list(scaling.SWEEPS))
        a = scaling.parse_args(["--out", "x", "--sweeps", "strong,seq", "--ranks", "2,1", "--cores", "2"])
        self.assertEqual((a.heads, a.iters, a.sweeps, a.ranks), (8, 3, ["strong", "seq"], [1, 2]))

    def test_errors(self):
        import contextlib
        import io
        for bad in (["--quick"], ["--out", "x", "--sweeps", "nope"], ["--out", "x", "--rates", "fast"],
                    ["--out", "x", "--ranks", "a"], ["--out", "x", "--head-dim", "60"]):
            with self.assertRaises(SystemExit, msg=bad), contextlib.redirect_stderr(io.StringIO()):
                scaling.parse_args(bad)

    def test_rate(self):
        self.assertEqual(scaling.rate_bytes_per_s("50mbit"), 50e6 / 8)
        self.assertEqual(scaling.rate_bytes_per_s("1gbit"), 1e9 / 8)

    def test_quick_plan(self):
        a = scaling.parse_args(["--out", "x", "--quick", "--cores", "2"])
        runs = scaling.plan_runs(a)
        names = [r.name for r in runs]
        self.assertEqual(len(names), len(set(names)))
        sweeps = {s for r in runs for s in r.meta.get("sweeps", [r.sweep])}
        self.assertTrue(set(scaling.SWEEPS) <= sweeps, sweeps)
        self.assertLess(sum(r.est_s for r in runs), 300)
        # calibration: one-rank rings at sizes no validation point has (3 x 2^k against powers
        # of 2), P-rank rings and concurrent kernel benches for every P above the cores
        ring1 = {r.problem.S for r in runs if r.name.startswith("ring1_")}
        points = {r.problem.S // r.problem.R for r in runs if r.sweep not in ("calib-ring", "calib-kernel",
                                                                                 "calib-link", "calib-share")}
        self.assertFalse(ring1 & points, ring1 & points)
        self.assertLessEqual(min(ring1), min(points))
        self.assertGreaterEqual(max(ring1), max(points))
        self.assertEqual(scaling.oversubscribed_ranks(a), [4, 8])
        for P in (4, 8):
            self.assertIn(f"ring{P}_S{scaling.ringp_calib_S(P)}_bwd", names)
            self.assertIn(f"kernel_concurrent_P{P}_S{scaling.CONC_S}", names)
        self.assertIn(f"kernel_S{scaling.CONC_S}_full", names)
        for r in runs:
            if r.problem is not None and r.kind == "bench":
                self.assertIn(str(r.problem.S), r.cmd)
        self.assertEqual(scaling.MPI_ENV["OMP_NUM_THREADS"], "1")  # one thread per rank

    def test_steady_calibration_plan(self):
        for argv in (["--quick"], []):
            a = scaling.parse_args(["--out", "x", "--cores", "2"] + argv)
            runs = scaling.plan_runs(a)
            for r in runs:
                if r.sweep == "calib-kernel":
                    # every pass timed for CALIB_TIMED_S by the plan's own rough rate, or at the cap
                    S = r.problem.S if r.problem else int(r.cmd[r.cmd.index("-S") + 1])
                    n = int(r.cmd[r.cmd.index("-n") + 1])
                    self.assertTrue(n == scaling.CALIB_MAX_ITERS or n >= 3, r.name)
                    if S <= 256:
                        self.assertEqual(r.launches, scaling.CALIB_LAUNCHES, r.name)
                elif r.sweep == "calib-ring":
                    n = int(r.cmd[r.cmd.index("-n") + 1])
                    p = r.problem
                    timed = n * scaling.iter_seconds(a, p.S, p.P, mode=p.mode)
                    self.assertTrue(timed >= scaling.CALIB_TIMED_S or n == scaling.CALIB_MAX_ITERS, r.name)
                    if timed < scaling.CALIB_SHORT_S:
                        self.assertGreaterEqual(r.launches, 3, r.name)
                        self.assertEqual(r.launches % 2, 1, r.name)  # an odd count: a true median
            # the tiny shards are launched several times; large points once
            by = {r.name: r for r in runs}
            self.assertEqual(by["P4_S128_zigzag_causal"].launches, scaling.POINT_LAUNCHES)
            self.assertEqual(by["P2_S128_zigzag_causal"].launches, scaling.POINT_LAUNCHES)
            big = [r for r in runs if r.problem and r.problem.S >= 2048 and not r.sweep.startswith("calib")]
            self.assertTrue(big and all(r.launches == 1 for r in big))
            # the kernel table reaches down to the smallest block (zigzag half-chunk) of every
            # calibration ring and every point: no modelled block below the measured sizes
            kmin = min(int(r.cmd[r.cmd.index("-S") + 1]) for r in runs if r.sweep == "calib-kernel")
            for r in runs:
                if r.kind == "bench" and r.problem:
                    self.assertGreaterEqual(r.problem.S // (2 * r.problem.R), kmin, r.name)
        # the message-cost rings (2 and P ranks) run at the smallest one-rank ring's shard, with
        # MSG_LAUNCHES launches (odd: a true median) of at least MSG_TIMED_S each
        for argv in (["--quick"], []):
            a = scaling.parse_args(["--out", "x", "--cores", "2"] + argv)
            runs = scaling.plan_runs(a)
            ring1 = sorted(r.problem.S for r in runs if r.name.startswith("ring1_") and r.problem.mode == "fwd")
            msg = [r for r in runs if re.match(r"ring[2-9]\d*_S\d+_(fwd|bwd)$", r.name)]
            self.assertEqual({r.problem.P for r in msg}, {2, 4, 8})
            for r in msg:
                self.assertEqual(r.problem.S // r.problem.P, ring1[0], r.name)
                self.assertEqual(r.launches, scaling.MSG_LAUNCHES, r.name)
                n = int(r.cmd[r.cmd.index("-n") + 1])
                p = r.problem
                self.assertTrue(n * scaling.iter_seconds(a, p.S, p.P, mode=p.mode) >= scaling.MSG_TIMED_S
                                or n == scaling.CALIB_MAX_ITERS, r.name)
            self.assertEqual(scaling.MSG_LAUNCHES % 2, 1)
            self.assertEqual(scaling.POINT_LAUNCHES % 2, 1)
            self.assertGreaterEqual(scaling.POINT_LAUNCHES, 9)
            # the kernel table has the size of every one-rank ring's calls up to 192 rows (rows / 2)
            # and of every point's calls (S / (2R)), so the factor compares measured sizes
            ks = {int(r.cmd[r.cmd.index("-S") + 1]) for r in runs if r.sweep == "calib-kernel"}
            for n in ring1:
                if n <= 192:
                    self.assertIn(n // 2, ks, n)
            for r in runs:
                if r.kind == "bench" and r.problem and not r.sweep.startswith("calib") and r.problem.S // r.problem.R <= 1024:
                    self.assertIn(r.problem.S // (2 * r.problem.R), ks, r.name)

    def test_median_launch_and_kernel_merge(self):
        res = [[{"time_ms": t}] for t in (3.0, 1.0, 9.0, 2.0, 5.0)]
        # sorted times 1, 2, 3, 5, 9 -> the median is 3.0, launch 0
        self.assertEqual(scaling.median_launch(res), 0)
        self.assertEqual(res[scaling.median_launch(res)][0]["time_ms"], 3.0)
        self.assertEqual(res[scaling.median_launch(res[:4])][0]["time_ms"], 2.0)  # lower median
        k = [{"fused_fwd": {"gflops": g, "time_ms": 1 / g}, "fused_bwd": {"gflops": 2 * g, "time_ms": 1.0},
              "threads": 1} for g in (10.0, 40.0, 20.0)]
        m = scaling.merge_kernel_launches(k)
        self.assertEqual(m["fused_fwd"]["gflops"], 20.0)
        self.assertEqual(m["fused_bwd"]["gflops"], 40.0)
        self.assertEqual(m["fused_fwd"]["launches_gflops"], [10.0, 40.0, 20.0])
        self.assertEqual(m["launches"], 3)
        self.assertEqual(k[0]["fused_fwd"]["gflops"], 10.0)  # inputs untouched

    def test_execute_keeps_the_median_launch(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            # a stand-in for ringattn_bench: each launch reports the next time from a list
            fake = os.path.join(d, "fake.py")
            with open(fake, "w") as f:
                f.write("import json, os, sys\n"
                        "c = os.path.join(os.path.dirname(sys.argv[0]), 'count')\n"
                        "i = int(open(c).read()) if os.path.exists(c) else 0\n"
                        "open(c, 'w').write(str(i + 1))\n"
                        "t = [4.0, 1.0, 7.0, 2.0, 3.0][i]\n"
                        "print(f'rank 0 forward: total {t} ms compute {t} ms (device 0.0 ms) wait 0.0 ms "
                        "sent 0.0 MB skipped 0/1')\n"
                        "json.dump([{'time_ms': t, 'seq': 8}], open(sys.argv[sys.argv.index('--json') + 1], 'w'))\n")
            run = scaling.Run("pt", "tiny", [sys.executable, fake], launches=5)
            rec = scaling.execute(run, d, 30)
            self.assertEqual(rec["rc"], 0)
            self.assertEqual(rec["launch_times_ms"], [4.0, 1.0, 7.0, 2.0, 3.0])
            self.assertEqual(rec["result"][0]["time_ms"], 3.0)
            self.assertEqual(rec["ranks"][0]["compute_ms"], 3.0)  # the kept launch's split
            with open(os.path.join(d, "pt.json")) as f:
                self.assertEqual(json.load(f)[0]["time_ms"], 3.0)
            with open(os.path.join(d, "pt.log")) as f:
                self.assertEqual(f.read().count("$ "), 5)

    def test_concurrent_kernel_bench_parsing(self):
        text = ("kernel               S     D   B   Hq  Hkv  dtype    mask     time_ms     best_ms    GFLOP/s   %peak  best_GF/s\n"
                "fused_fwd         1024    64   1    8    8   bf16    full      20.877      20.825      102.9   55.3%      103.1\n"
                "fused_bwd         1024    64   1    8    8   bf16    full      41.609      41.430      129.0   69.4%      129.6\n")
        rows = [(m.group(1), float(m.group(2)), float(m.group(3))) for m in scaling.CONC_RE.finditer(text)]
        self.assertEqual(rows, [("fwd", 20.877, 102.9), ("bwd", 41.609, 129.0)])

    def test_verbose_parsing(self):
        text = ("rank 0 forward: total 10.0 ms compute 8.0 ms (device 0.0 ms) wait 2.0 ms sent 1.5 MB skipped 0/2\n"
                "rank 0 backward: total 20.0 ms compute 18.0 ms (device 0.0 ms) wait 2.0 ms sent 4.5 MB skipped 0/2\n"
                "rank 1 forward: total 11.0 ms compute 9.0 ms (device 0.0 ms) wait 2.0 ms sent 1.5 MB skipped 0/2\n")
        r = scaling.parse_verbose(text)
        self.assertEqual(r[0]["compute_ms"], 26.0)
        self.assertEqual(r[0]["sent_MB"], 6.0)
        self.assertEqual(r[1]["total_ms"], 11.0)


if __name__ == "__main__":
    unittest.main(verbosity=1)
