#!/usr/bin/env python3
"""Overhead of the Python path: ra.ring_attention forward + backward against ringattn_bench on the
same problem, in one run.

    python3 examples/python/bench_ring.py --bench build/examples/ringattn_bench [--np 2] \
        [--seq 4096] [--heads 8] [--head-dim 128] [--dtype bf16] [-n 5] [-w 1] [--plan] \
        [--repeat R]

Run as a plain process, it launches `mpirun -np NP ringattn_bench ... --json` and then
`mpirun -np NP python3 bench_ring.py --worker ...` with the same problem (causal zigzag, B = 1,
Hq = Hkv = heads) and the same timing rule as ringattn_bench: a barrier, then forward + backward,
the slowest rank's wall time, the mean over -n iterations after -w warm-ups. The Python side
includes what a training step pays: torch allocating O, LSE and the gradients, autograd, and the
core's argument handling. One OpenMP thread per rank (OMP_NUM_THREADS=1) in both. It also
reports the time of each Python iteration spent outside the library's forward and backward calls
(wall time minus the calls' own total_seconds from ringattn_context_last_stats, the largest over
ranks): the overhead of the Python path itself, which the load of a shared machine moves far less
than the times of two separate runs.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(args):
    import torch
    from mpi4py import MPI
    import ringattn
    import ringattn.torch as ra

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    group = ra.RingGroup.from_mpi(comm, use_plans=args.plan)
    dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    n = ringattn.shard_length(args.seq, group.world, group.rank, "zigzag")
    g = torch.Generator().manual_seed(1 + group.rank)
    shape = (1, n, args.heads, args.head_dim)
    q, k, v, do = (torch.randn(shape, generator=g).to(dt) for _ in range(4))
    q.requires_grad_(True), k.requires_grad_(True), v.requires_grad_(True)
    times, outside = [], []
    for it in range(args.warmup + args.iters):
        q.grad = k.grad = v.grad = None
        comm.Barrier()
        t0 = MPI.Wtime()
        o = ra.ring_attention(q, k, v, group, causal=True, scheme="zigzag")
        lib_fwd = group.last_stats()["total_seconds"]
        o.backward(do)
        dt_it = MPI.Wtime() - t0
        lib_bwd = group.last_stats()["total_seconds"]
        slowest = comm.allreduce(dt_it, op=MPI.MAX)
        # Time of this rank's iteration spent outside the library's two calls (Python, torch's
        # allocations and autograd, the core's argument handling): the overhead itself, which a
        # change of machine load moves far less than the whole time.
        out_max = comm.allreduce(dt_it - lib_fwd - lib_bwd, op=MPI.MAX)
        if it >= args.warmup:
            times.append(slowest)
            outside.append(out_max)
    if group.rank == 0:
        print(json.dumps({"time_ms": 1e3 * sum(times) / len(times),
                          "times_ms": [1e3 * t for t in times],
                          "outside_library_ms": 1e3 * sum(outside) / len(outside)}))
    group.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="build/examples/ringattn_bench")
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtype", default="bf16", choices=["f32", "f16", "bf16"])
    ap.add_argument("-n", "--iters", type=int, default=5)
    ap.add_argument("-w", "--warmup", type=int, default=1)
    ap.add_argument("--plan", action="store_true", help="both sides through ring plans")
    ap.add_argument("--repeat", type=int, default=1,
                    help="alternate the two runs this many times; report each and the median")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    # The package of the build tree the C tool comes from (build/python beside build/examples),
    # unless ringattn is importable already.
    build_py = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(args.bench))),
                            "python")
    try:
        import ringattn  # noqa: F401
    except ImportError:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (build_py, env.get("PYTHONPATH")) if p)
    mpirun = ["mpirun", "-np", str(args.np)]
    prob = ["-H", str(args.heads), "-d", str(args.head_dim), "--dtype", args.dtype]
    plan = ["--plan"] if args.plan else []
    ccmd = (mpirun + [args.bench, "-b", str(args.seq), "-e", str(args.seq)] + prob +
            ["--causal", "--scheme", "zigzag", "--mode", "both", "-n", str(args.iters),
             "-w", str(args.warmup), "-c", "0"] + plan)
    pycmd = (mpirun + [sys.executable, os.path.abspath(__file__), "--worker", "--seq",
                       str(args.seq), "--heads", str(args.heads), "--head-dim",
                       str(args.head_dim), "--dtype", args.dtype, "-n", str(args.iters), "-w",
                       str(args.warmup)] + plan)
    print("$", " ".join(ccmd), flush=True)
    print("$", " ".join(pycmd), flush=True)
    ratios = []
    for rep in range(args.repeat):  # alternating, so that a change of load hits both sides
        with tempfile.TemporaryDirectory() as tmp:
            js = os.path.join(tmp, "c.json")
            subprocess.run(ccmd + ["--json", js], check=True, env=env, capture_output=True)
            with open(js) as f:
                rows = json.load(f)
            c_ms = (rows["rows"] if isinstance(rows, dict) else rows)[0]["time_ms"]
        out = subprocess.run(pycmd, check=True, env=env, capture_output=True, text=True).stdout
        py = json.loads(out.strip().splitlines()[-1])
        py_ms = py["time_ms"]
        ratios.append(py_ms / c_ms)
        print(f"run {rep + 1}: P={args.np} S={args.seq} H={args.heads} D={args.head_dim} "
              f"{args.dtype} causal zigzag fwd+bwd{' (plans)' if args.plan else ''}: "
              f"ringattn_bench {c_ms:.1f} ms, ra.ring_attention {py_ms:.1f} ms "
              f"({100 * (py_ms / c_ms - 1):+.1f}%); outside the library "
              f"{py['outside_library_ms']:.2f} ms per iteration "
              f"({100 * py['outside_library_ms'] / py_ms:.2f}%)  [python iterations: "
              f"{', '.join(f'{t:.1f}' for t in py['times_ms'])} ms]", flush=True)
    ratios.sort()
    print(f"median of {len(ratios)}: ra.ring_attention / ringattn_bench = "
          f"{ratios[len(ratios) // 2]:.3f}")

if __name__ == "__main__":
    sys.exit(main())
