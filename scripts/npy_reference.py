#!/usr/bin/env python3
"""Inputs and a float64 numpy reference for ringattn_run.

  npy_reference.py gen DIR [--b B --s S --hq HQ --hkv HKV --d D --seed N]
      writes DIR/q.npy, k.npy, v.npy, do.npy (float32, [B,S,H,D])
  npy_reference.py check DIR OUT [--causal] [--window L,R] [--tol T]
      recomputes attention in float64 and compares OUT/o.npy, lse.npy and, when present,
      dq.npy, dk.npy, dv.npy; exits 1 if any max-abs error exceeds the tolerance.
"""
import argparse
import os
import sys

import numpy as np


def reference(q, k, v, do, causal, window):
    b, s, hq, d = q.shape
    hkv = k.shape[2]
    g = hq // hkv
    q64, k64, v64, do64 = (x.astype(np.float64) for x in (q, k, v, do))
    k64 = np.repeat(k64, g, axis=2)  # query head h reads kv head h // g
    v64 = np.repeat(v64, g, axis=2)
    scale = 1.0 / np.sqrt(d)
    sc = np.einsum("bqhd,bkhd->bhqk", q64, k64) * scale
    pos = np.arange(s)
    left, right = window
    if causal:
        right = 0
    vis = np.ones((s, s), dtype=bool)
    if left >= 0:
        vis &= pos[None, :] >= pos[:, None] - left
    if right >= 0:
        vis &= pos[None, :] <= pos[:, None] + right
    sc = np.where(vis, sc, -np.inf)
    m = sc.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(sc - m)
    den = e.sum(axis=-1, keepdims=True)
    lse = np.where(den[..., 0] > 0, np.log(np.maximum(den[..., 0], 1e-300)) + m[..., 0], -np.inf)
    p = np.where(den > 0, e / np.maximum(den, 1e-300), 0.0)
    o = np.einsum("bhqk,bkhd->bqhd", p, v64)
    grads = None
    if do is not None:
        dp = np.einsum("bqhd,bkhd->bhqk", do64, v64)
        delta = np.einsum("bqhd,bqhd->bhq", do64, o)[..., None]
        ds = p * (dp - delta)
        dq = np.einsum("bhqk,bkhd->bqhd", ds, k64) * scale
        dk = np.einsum("bhqk,bqhd->bkhd", ds, q64) * scale
        dv = np.einsum("bhqk,bqhd->bkhd", p, do64)
        dk = dk.reshape(b, s, hkv, g, d).sum(axis=3)
        dv = dv.reshape(b, s, hkv, g, d).sum(axis=3)
        grads = (dq, dk, dv)
    return o, lse, grads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["gen", "check"])
    ap.add_argument("dir")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--b", type=int, default=1)
    ap.add_argument("--s", type=int, default=1000)
    ap.add_argument("--hq", type=int, default=4)
    ap.add_argument("--hkv", type=int, default=2)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--window", default="-1,-1")
    ap.add_argument("--tol", type=float, default=2e-4)
    a = ap.parse_args()
    if a.cmd == "gen":
        rng = np.random.default_rng(a.seed)
        os.makedirs(a.dir, exist_ok=True)
        for name, h in (("q", a.hq), ("k", a.hkv), ("v", a.hkv), ("do", a.hq)):
            x = rng.standard_normal((a.b, a.s, h, a.d)).astype(np.float32)
            np.save(os.path.join(a.dir, name + ".npy"), x)
        print(f"wrote q,k,v,do [{a.b},{a.s},{a.hq}|{a.hkv},{a.d}] float32 to {a.dir}")
        return 0
    load = lambda d, n: np.load(os.path.join(d, n + ".npy"))
    q, k, v = load(a.dir, "q"), load(a.dir, "k"), load(a.dir, "v")
    has_grad = os.path.exists(os.path.join(a.out, "dq.npy"))
    do = load(a.dir, "do") if has_grad else None
    window = tuple(int(x) for x in a.window.split(","))
    o, lse, grads = reference(q, k, v, do, a.causal, window)
    results = [("o", o), ("lse", lse)]
    if grads is not None:
        results += list(zip(("dq", "dk", "dv"), grads))
    ok = True
    for name, ref in results:
        ours = load(a.out, name).astype(np.float64)
        if ours.shape != ref.shape:
            print(f"{name}: shape {ours.shape} != reference {ref.shape}")
            ok = False
            continue
        both_inf = np.isneginf(ours) & np.isneginf(ref)
        err = np.where(both_inf, 0.0, np.abs(ours - ref))
        worst = float(np.nanmax(err)) if err.size else 0.0
        if np.isnan(ours).any():
            worst = float("nan")
        good = worst <= a.tol
        ok &= good
        print(f"{name:4s} max|ours - float64 reference| = {worst:.3e}  {'ok' if good else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
