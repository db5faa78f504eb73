"""Float64 reference and the naive same-dtype computation of the 2x rule (DESIGN.md), in torch on
the GLOBAL (unsharded) sequence. Masks come from global positions, as in the library: causal
(key <= query), window (left, right), packed sequences see only their own tokens."""
import math

import torch

# Per unit of output magnitude; the values of tests/common/reference.cpp (dtype_floor).
FLOOR = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def visible(sq, sk, causal, window, cu=None):
    """[Sq, Sk] bool: which keys each query sees (global positions; packed: per sequence)."""
    if cu is None:
        qp = torch.arange(sq)
        kp = torch.arange(sk)
        qs = torch.zeros(sq, dtype=torch.long)
        ks = torch.zeros(sk, dtype=torch.long)
    else:
        lens = [b - a for a, b in zip(cu[:-1], cu[1:])]
        qs = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens, dtype=torch.long))
        ks = qs
        starts = torch.tensor(cu[:-1], dtype=torch.long)
        qp = torch.arange(sq) - starts[qs]
        kp = qp
    m = qs[:, None] == ks[None, :]
    d = kp[None, :] - qp[:, None]  # key - query
    left, right = window
    if causal:
        m &= d <= 0
    if left >= 0:
        m &= d >= -left
    if right >= 0:
        m &= d <= right
    return m


def _to_bhsd(x, packed):
    # [B,S,H,D] -> [B,H,S,D]; packed [T,H,D] -> [1,H,T,D]
    return x.unsqueeze(0).transpose(1, 2) if packed else x.transpose(1, 2)


def _from_bhsd(x, packed):
    return x.transpose(1, 2).squeeze(0) if packed else x.transpose(1, 2)


def attention_explicit(q, k, v, do, mask, scale, rnd):
    """O, LSE and dQ, dK, dV of sum(O * dO), written out (no autograd) so that every intermediate
    can be rounded by `rnd` (the naive same-dtype computation) or not (float64 reference).
    Inputs [B, H, S, D] already in the compute dtype, K/V repeated to Hq heads."""
    s = rnd(torch.matmul(q, k.transpose(-1, -2)))
    s = rnd(s * scale)
    s = s.masked_fill(~mask, float("-inf"))
    mx = s.amax(-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = torch.exp(s - mx)
    den = e.sum(-1, keepdim=True)
    lse = torch.where(den > 0, mx + torch.log(den), torch.full_like(den, float("-inf")))
    p = rnd(torch.where(den > 0, e / torch.where(den > 0, den, torch.ones_like(den)),
                        torch.zeros_like(e)))
    o = rnd(torch.matmul(p, v))
    dp = rnd(torch.matmul(do, v.transpose(-1, -2)))
    delta = (do * o).sum(-1, keepdim=True)
    ds = rnd(p * (dp - delta))
    dq = rnd(torch.matmul(ds, k) * scale)
    dk = rnd(torch.matmul(ds.transpose(-1, -2), q) * scale)
    dv = rnd(torch.matmul(p.transpose(-1, -2), do))
    return o, lse.squeeze(-1), dq, dk, dv


def run(q, k, v, do, causal=False, window=(-1, -1), scale=None, cu=None, dtype=None):
    """(O, LSE, dQ, dK, dV) in the layouts of the API. dtype None: the float64 reference; else
    the naive computation in `dtype` (float32 GEMMs, every intermediate rounded to dtype)."""
    packed = q.dim() == 3
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    hq, hkv = q.shape[-2], k.shape[-2]
    if dtype is None:
        cd, rnd = torch.float64, (lambda x: x)
    else:
        cd = torch.float32
        rnd = (lambda x: x) if dtype == torch.float32 else (lambda x: x.to(dtype).to(torch.float32))
        scale = rnd(torch.tensor(scale, dtype=torch.float32)).item()
    qh, kh, vh, doh = (_to_bhsd(x.to(cd), packed) for x in (q, k, v, do))
    kh = kh.repeat_interleave(hq // hkv, dim=1)
    vh = vh.repeat_interleave(hq // hkv, dim=1)
    mask = visible(qh.shape[2], kh.shape[2], causal, window, cu)
    o, lse, dq, dk, dv = attention_explicit(qh, kh, vh, doh, mask, scale, rnd)
    b = dk.shape[0]
    dk = dk.reshape(b, hkv, hq // hkv, *dk.shape[2:]).sum(2)
    dv = dv.reshape(b, hkv, hq // hkv, *dv.shape[2:]).sum(2)
    lse = lse.squeeze(0) if packed else lse
    return (_from_bhsd(o, packed), lse, _from_bhsd(dq, packed), _from_bhsd(dk, packed),
            _from_bhsd(dv, packed))


def max_err(a, ref):
    """max |a - ref| in float64; -inf must match -inf exactly; NaN counts as +inf."""
    a = a.to(torch.float64)
    ref = ref.to(torch.float64)
    both_inf = torch.isneginf(a) & torch.isneginf(ref)
    diff = (a - ref).abs()
    diff = torch.where(both_inf, torch.zeros_like(diff), diff)
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    return diff.max().item() if diff.numel() else 0.0


def within_2x_naive(name, ours, ref, naive, dtype):
    e_ours, e_naive = max_err(ours, ref), max_err(naive, ref)
    finite = ref[torch.isfinite(ref)]
    mag = finite.abs().max().item() if finite.numel() else 0.0
    bound = 2.0 * e_naive + FLOOR[dtype] * max(1.0, mag)
    assert e_ours <= bound, (f"{name} ({dtype}): max|ours - ref64| = {e_ours:.3e} exceeds "
                             f"2 * max|naive - ref64| + floor = {bound:.3e}")
