#!/usr/bin/env python3
"""A tiny causal transformer trained sequence-parallel with ringattn, against the same model in one
process.

    mpirun -np 2 python3 examples/python/train_tiny.py [--steps 200] [--seq 64] [--dtype f32]

Every rank builds two copies of one model (embedding, two pre-norm blocks with RoPE attention and
an MLP, a head), with the same initial weights:
  * the sequence-parallel copy sees its rank's shard of every sequence (zigzag), rotates q and k at
    the GLOBAL positions of its rows (ra.positions) and runs ra.ring_attention; each rank's loss
    is its tokens' share of the global mean, and the parameter gradients are summed over ranks
    (MPI Allreduce) before an identical Adam step on every rank;
  * the reference copy sees whole sequences and runs ra.attention (single process).
Both train on the same synthetic batches (sequences made of a random 8-token motif repeated, so
that the loss falls, from ln(64) = 4.16 to about 1 in 200 steps, once the model learns to copy from
8 tokens back).

Checks (exit code 1 when one fails), tolerances per attention dtype (TOLERANCES):
  * after the first backward, every parameter gradient of the two copies agrees:
    max|g_sp - g_ref| <= grad_rtol * max|g_ref| per parameter;
  * the loss curves agree at every step: |loss_sp - loss_ref| <= loss_atol.
Why these tolerances: the two copies do the same arithmetic in a different order (the ring merges
partial softmax results block by block in float32; the token sums of the loss and of every weight
gradient are split over ranks and summed by MPI), so they differ by rounding only. In float32
that is a few units of 1e-7 relative at step 1 (measured: 6e-7 to 8e-7); grad_rtol = 1e-4 is ~1000x
float32's epsilon, while a missing or double-counted token, position or rank is off by 1e-2 or
more. Adam divides by sqrt(v), so rounding differences of the gradients move the weights by up to
lr x (relative difference) per step and the curves drift apart slowly, fastest while the loss
falls steeply (steps 130-200 here); loss_atol = 1e-3 bounds 200 steps of that drift (measured:
2e-5) with margin. With bf16/f16 attention each attention output is rounded to 8 (11) bits
after a differently ordered float32 sum, so the two copies differ by up to one unit in the last
place (4e-3 relative for bf16) on some elements: grad_rtol = 1e-3 (measured 2e-5 at step 1) and
loss_atol = 5e-2 (measured 1.5e-2 at step 200 with bf16, during the steep fall). docs/python.md
records the runs.
"""
import argparse
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from mpi4py import MPI

import ringattn.torch as ra

# dtype of the attention -> (grad_rtol, loss_atol); see the docstring for why.
TOLERANCES = {"f32": (1e-4, 1e-3), "bf16": (1e-3, 5e-2), "f16": (1e-3, 5e-2)}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def rope(x, pos, base=10000.0):
    """Rotary embedding of x [B, S, H, D] at positions pos [S] (global positions)."""
    d = x.shape[-1]
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    ang = pos.to(torch.float32)[:, None] * inv[None, :]            # [S, D/2]
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    x1, x2 = x[..., 0::2].float(), x[..., 1::2].float()
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    return out.to(x.dtype)


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x, pos, attend):
        b, s, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, dim // self.heads).unbind(2)
        q, k = rope(q, pos), rope(k, pos)  # v stays a strided view of qkv (copied by ringattn)
        x = x + self.proj(attend(q, k, v).reshape(b, s, dim))
        return x + self.mlp(self.norm2(x))


class TinyLM(nn.Module):
    def __init__(self, vocab=64, dim=64, heads=2, layers=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, tokens, pos, attend):
        x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x, pos, attend)
        return self.head(self.norm(x))


def batch(step, b, s, vocab, motif=8):
    g = torch.Generator().manual_seed(1000 + step)
    m = torch.randint(0, vocab, (b, motif), generator=g)
    tokens = m.repeat(1, (s + 1 + motif - 1) // motif)[:, : s + 1]
    return tokens[:, :-1], tokens[:, 1:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seq", type=int, default=64, help="global sequence length")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--dtype", default="f32", choices=sorted(DTYPES),
                    help="attention dtype (q, k, v cast to it; the model stays float32)")
    ap.add_argument("--scheme", default="zigzag", choices=["contiguous", "zigzag", "striped"])
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    group = ra.RingGroup.from_mpi(comm, use_plans=True)
    rank, world = group.rank, group.world
    dt = DTYPES[args.dtype]
    GRAD_RTOL, LOSS_ATOL = TOLERANCES[args.dtype]
    vocab, s = 64, args.seq

    torch.manual_seed(0)
    model_ref = TinyLM(vocab)
    model_sp = TinyLM(vocab)
    model_sp.load_state_dict(model_ref.state_dict())
    opt_ref = torch.optim.Adam(model_ref.parameters(), lr=args.lr)
    opt_sp = torch.optim.Adam(model_sp.parameters(), lr=args.lr)

    pos_glob = torch.arange(s)
    pos_loc = ra.positions(s, group, scheme=args.scheme)  # global positions of the local rows

    def attend_sp(q, k, v):
        return ra.ring_attention(q.to(dt), k.to(dt), v.to(dt), group, causal=True,
                                 scheme=args.scheme).to(q.dtype)

    def attend_ref(q, k, v):
        return ra.attention(q.to(dt), k.to(dt), v.to(dt), causal=True).to(q.dtype)

    failures = []
    worst_loss = 0.0
    for step in range(args.steps):
        x, y = batch(step, args.batch, s, vocab)
        # reference: whole sequences, one process
        opt_ref.zero_grad()
        loss_ref = F.cross_entropy(model_ref(x, pos_glob, attend_ref).flatten(0, 1), y.flatten())
        loss_ref.backward()
        # sequence parallel: this rank's shard; its share of the global mean
        opt_sp.zero_grad()
        xl = ra.shard(x, group, scheme=args.scheme)
        yl = ra.shard(y, group, scheme=args.scheme)
        logits = model_sp(xl, pos_loc, attend_sp)
        loss_loc = F.cross_entropy(logits.flatten(0, 1), yl.flatten(), reduction="sum") / y.numel()
        loss_loc.backward()
        for p in model_sp.parameters():
            comm.Allreduce(MPI.IN_PLACE, p.grad.numpy(), op=MPI.SUM)
        loss_sp = comm.allreduce(loss_loc.item(), op=MPI.SUM)

        if step == 0:
            worst = 0.0
            for (name, p_ref), p_sp in zip(model_ref.named_parameters(), model_sp.parameters()):
                scale = p_ref.grad.abs().max().item()
                diff = (p_sp.grad - p_ref.grad).abs().max().item()
                worst = max(worst, diff / max(scale, 1e-30))
                if diff > GRAD_RTOL * scale:
                    failures.append(f"step 1 gradient of {name}: max diff {diff:.3e} > "
                                    f"{GRAD_RTOL} * {scale:.3e}")
            if rank == 0:
                print(f"step 1: gradients agree to {worst:.3e} relative (tolerance {GRAD_RTOL})")
        d = abs(loss_sp - loss_ref.item())
        worst_loss = max(worst_loss, d)
        if d > LOSS_ATOL:
            failures.append(f"step {step + 1}: loss {loss_sp:.6f} (P={world}) vs "
                            f"{loss_ref.item():.6f} (single) differ by {d:.3e} > {LOSS_ATOL}")
        if rank == 0 and (step % 5 == 0 or step == args.steps - 1):
            print(f"step {step + 1:3d}  loss P={world}: {loss_sp:.6f}  single: "
                  f"{loss_ref.item():.6f}  |diff| {d:.2e}")
        opt_ref.step()
        opt_sp.step()

    if rank == 0:
        print(f"max |loss diff| over {args.steps} steps: {worst_loss:.3e} (tolerance {LOSS_ATOL})")
    group.close()
    failed = comm.allreduce(1 if failures else 0, op=MPI.SUM)
    for f in failures:
        print(f"rank {rank}: FAIL {f}", file=sys.stderr)
    if rank == 0:
        print("PASS" if failed == 0 else "FAIL")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
