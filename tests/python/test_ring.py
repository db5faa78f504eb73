"""ringattn.torch under mpirun (P ranks, CPU): ring forward and dQ/dK/dV against a float64
reference of the gathered sequence, by the 2x-naive rule of DESIGN.md."""
import pytest
import torch

import ringattn
import ringattn.torch as ra
import reference as refm

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
MASKS = {  # name: (causal, window)
    "full": (False, (-1, -1)),
    "causal": (True, (-1, -1)),
    "window": (False, (5, 3)),
    "causal_window": (True, (6, -1)),
}


def make_inputs(seed, shape_q, shape_kv, dtype):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(shape_q, generator=g, dtype=torch.float64) * 2 - 1
    k = torch.rand(shape_kv, generator=g, dtype=torch.float64) * 2 - 1
    v = torch.rand(shape_kv, generator=g, dtype=torch.float64) * 2 - 1
    do = torch.rand(shape_q, generator=g, dtype=torch.float64) * 2 - 1
    # Inputs are the dtype's values: the reference sees exactly what the kernels see.
    return tuple(x.to(dtype) for x in (q, k, v, do))


def check_case(group, seed, shape_q, shape_kv, dtype, causal, window, scheme, cu=None,
               scale=None, transform=None, device="cpu"):
    q, k, v, do = make_inputs(seed, shape_q, shape_kv, dtype)
    sd = 0 if cu is not None else 1
    ql, kl, vl, dol = (ra.shard(x, group, scheme=scheme, seq_dim=sd, cu_seqlens=cu).to(device)
                       for x in (q, k, v, do))
    if transform is not None:
        ql, kl, vl = transform(ql), transform(kl), transform(vl)
    ql, kl, vl = (x.detach().requires_grad_(True) for x in (ql, kl, vl))
    o, lse = ra.ring_attention(ql, kl, vl, group, causal=causal, window=window,
                               softmax_scale=scale, scheme=scheme, cu_seqlens=cu,
                               return_lse=True)
    assert o.dtype == dtype and lse.dtype == torch.float32
    o.backward(dol)
    ours = [ra.unshard(x.detach(), group, scheme=scheme, seq_dim=sd, cu_seqlens=cu).cpu()
            for x in (o, ql.grad, kl.grad, vl.grad)]
    lse_g = ra.unshard(lse, group, scheme=scheme, seq_dim=-1, cu_seqlens=cu).cpu()
    ours.insert(1, lse_g)
    ref = refm.run(q, k, v, do, causal, window, scale, cu)
    naive = refm.run(q, k, v, do, causal, window, scale, cu, dtype=dtype)
    for name, a, r, n in zip(("O", "LSE", "dQ", "dK", "dV"), ours, ref, naive):
        assert a.shape == r.shape, name
        refm.within_2x_naive(name, a, r, n, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("scheme", ["contiguous", "zigzag", "striped"])
def test_fixed_length_matches_fp64(group, seed, scheme, mask, dtype):
    causal, window = MASKS[mask]
    # S = 37: uneven shares for every P; B = 2, 2 heads, D = 32.
    check_case(group, seed, (2, 37, 2, 32), (2, 37, 2, 32), dtype, causal, window, scheme)


@pytest.mark.parametrize("hkv", [2, 1], ids=["gqa", "mqa"])
@pytest.mark.parametrize("scheme", ["zigzag", "striped"])
def test_gqa_mqa(group, seed, scheme, hkv):
    check_case(group, seed, (1, 29, 4, 40), (1, 29, hkv, 40), torch.bfloat16, True, (-1, -1),
               scheme, scale=0.3)


@pytest.mark.parametrize("mask", ["full", "causal", "window"])
@pytest.mark.parametrize("scheme", ["contiguous", "zigzag", "striped"])
def test_packed_varlen_with_empty_sequences(group, seed, scheme, mask):
    causal, window = MASKS[mask]
    cu = [0, 9, 9, 12, 12, 31, 32]  # lengths 9, 0, 3, 0, 19, 1: short ones leave ranks empty
    check_case(group, seed, (32, 2, 32), (32, 1, 32), torch.float16, causal, window, scheme,
               cu=cu)


def test_non_contiguous_inputs(group, seed):
    # Local shards as views with permuted strides (last dim not contiguous): copied, then run.
    def transpose_view(x):
        return x.transpose(-1, -2).contiguous().transpose(-1, -2)
    check_case(group, seed, (1, 21, 2, 32), (1, 21, 2, 32), torch.float32, True, (-1, -1),
               "zigzag", transform=transpose_view)


def test_contiguous_inputs_pass_without_copies(group, monkeypatch):
    seen = []
    real = ra._desc

    def spy(t):
        seen.append(t.data_ptr())
        return real(t)
    monkeypatch.setattr(ra, "_desc", spy)
    n = ringattn.shard_length(12, group.world, group.rank, "zigzag")
    q, k, v = (torch.randn(1, n, 2, 32) for _ in range(3))
    ra.ring_attention(q, k, v, group, causal=True)
    assert seen[:3] == [q.data_ptr(), k.data_ptr(), v.data_ptr()]


def test_ring_plans_match_one_shot_calls(group, plan_group, seed):
    n = ringattn.shard_length(40, group.world, group.rank, "zigzag")
    g = torch.Generator().manual_seed(seed + group.rank)
    q, k, v, do = (torch.randn(1, n, 2, 32, generator=g) for _ in range(4))
    outs = []
    for grp in (group, plan_group, plan_group):  # the second plan call reuses the cached plan
        qq, kk, vv = (x.clone().requires_grad_(True) for x in (q, k, v))
        o = ra.ring_attention(qq, kk, vv, grp, causal=True)
        o.backward(do)
        outs.append([o.detach(), qq.grad, kk.grad, vv.grad])
    for a, b in zip(outs[0], outs[1]):
        assert torch.equal(a, b)
    for a, b in zip(outs[1], outs[2]):
        assert torch.equal(a, b)
    assert len(plan_group._plans) >= 1


def test_positions_match_shard(group):
    for scheme in ("contiguous", "zigzag", "striped"):
        pos = ra.positions(23, group, scheme=scheme)
        x = torch.arange(23).view(1, 23)
        assert torch.equal(ra.shard(x, group, scheme=scheme)[0], pos)
        assert torch.equal(ra.unshard(ra.shard(x, group, scheme=scheme), group, scheme=scheme), x)


def test_shape_mismatch_on_one_rank_raises_on_every_rank(group):
    n = ringattn.shard_length(16, group.world, group.rank, "zigzag")
    d = 40 if group.rank == group.world - 1 else 32
    q = torch.randn(1, n, 2, d)
    k, v = torch.randn(1, n, 2, 32), torch.randn(1, n, 2, 32)
    with pytest.raises(ringattn.RingAttnError) as info:
        ra.ring_attention(q, k, v, group)
    assert info.value.status.startswith("RINGATTN_ERROR_")
    assert info.value.message


def test_dtype_refused_on_one_rank_raises_on_every_rank(group):
    n = ringattn.shard_length(16, group.world, group.rank, "zigzag")
    dt = torch.float64 if group.rank == 0 else torch.float32
    q, k, v = (torch.randn(1, n, 2, 32, dtype=dt) for _ in range(3))
    with pytest.raises(ringattn.RingAttnError):
        ra.ring_attention(q, k, v, group)
    # The group still works afterwards (the refusal happened before any data moved).
    q, k, v = (torch.randn(1, n, 2, 32) for _ in range(3))
    ra.ring_attention(q, k, v, group)


def test_cudnn_local_kernel_on_cpu_tensors_raises_on_every_rank(comm):
    # cuDNN computes on CUDA tensors only: refused on every rank before anything runs; an
    # unknown name is refused when the group is made.
    with pytest.raises(ringattn.RingAttnError) as info:
        ra.RingGroup.from_mpi(comm, local_kernel="flash")
    assert info.value.status == "RINGATTN_ERROR_INVALID_ARGUMENT"
    g = ra.RingGroup.from_mpi(comm, timeout_ms=60000, local_kernel="cudnn")
    try:
        n = ringattn.shard_length(16, g.world, g.rank, "zigzag")
        q, k, v = (torch.randn(1, n, 2, 32, dtype=torch.bfloat16) for _ in range(3))
        with pytest.raises(ringattn.RingAttnError) as info:
            ra.ring_attention(q, k, v, g)
        assert info.value.status == "RINGATTN_ERROR_UNSUPPORTED"
        assert "local_kernel" in info.value.message
    finally:
        g.close()


def test_plan_mismatch_at_creation_raises_on_every_rank(plan_group):
    n = ringattn.shard_length(20, plan_group.world, plan_group.rank, "striped")
    # Rank 0 has 4 query heads, the others 2 (valid locally, a mismatch between ranks); alone,
    # 3 heads over 2 KV heads is invalid.
    hq = (4 if plan_group.world > 1 else 3) if plan_group.rank == 0 else 2
    q = torch.randn(1, n, hq, 32)
    k, v = torch.randn(1, n, 2, 32), torch.randn(1, n, 2, 32)
    with pytest.raises(ringattn.RingAttnError):
        ra.ring_attention(q, k, v, plan_group, scheme="striped")


def test_single_process_attention_matches_fp64(seed):
    q, k, v, do = make_inputs(seed, (2, 33, 4, 32), (2, 33, 2, 32), torch.bfloat16)
    qq, kk, vv = (x.clone().requires_grad_(True) for x in (q, k, v))
    o, lse = ra.attention(qq, kk, vv, causal=True, window=(7, -1), return_lse=True)
    o.backward(do)
    ref = refm.run(q, k, v, do, True, (7, -1))
    naive = refm.run(q, k, v, do, True, (7, -1), dtype=torch.bfloat16)
    for name, a, r, n in zip(("O", "LSE", "dQ", "dK", "dV"), (o, lse, qq.grad, kk.grad, vv.grad),
                             ref, naive):
        refm.within_2x_naive(name, a.detach(), r, n, torch.bfloat16)


def test_errors_carry_status_and_message():
    q = torch.randn(1, 8, 2, 32)
    with pytest.raises(ringattn.RingAttnError) as info:
        ra.attention(q, torch.randn(1, 8, 3, 32), torch.randn(1, 8, 3, 32))
    assert info.value.status == "RINGATTN_ERROR_SHAPE_MISMATCH"
    assert info.value.code == 3
    with pytest.raises(ringattn.RingAttnError) as info:
        ra.attention(torch.randn(1, 8, 2, 20), torch.randn(1, 8, 2, 20), torch.randn(1, 8, 2, 20))
    assert info.value.status == "RINGATTN_ERROR_UNSUPPORTED"


@pytest.mark.parametrize("scheme,dtype,causal,window", [
    ("zigzag", torch.bfloat16, True, (-1, -1)),
    ("striped", torch.float32, False, (40, 17)),
    ("contiguous", torch.float16, True, (100, -1)),
])
def test_longer_sequences_span_several_tiles(group, seed, scheme, dtype, causal, window):
    check_case(group, seed, (1, 301, 2, 64), (1, 301, 1, 64), dtype, causal, window, scheme)


def test_error_does_not_grow_with_the_ring(group, seed):
    # DESIGN.md: the error at P ranks stays within 1.5x the error of one process (the same
    # kernels on the whole sequence, ra.attention), since partial results merge in float32.
    dtype = torch.bfloat16
    q, k, v, do = make_inputs(seed, (1, 301, 2, 64), (1, 301, 2, 64), dtype)
    o1 = ra.attention(q, k, v, causal=True)
    ql, kl, vl = (ra.shard(x, group) for x in (q, k, v))
    op = ra.unshard(ra.ring_attention(ql, kl, vl, group, causal=True), group)
    ref = refm.run(q, k, v, do, True)[0]
    e1, ep = refm.max_err(o1, ref), refm.max_err(op, ref)
    assert ep <= 1.5 * e1 + refm.FLOOR[dtype] * 0.1, f"P={group.world}: {ep:.3e} vs P=1 {e1:.3e}"


@pytest.mark.parametrize("cu", [None, [0, 2, 5]], ids=["fixed", "packed"])
@pytest.mark.parametrize("scheme", ["contiguous", "zigzag", "striped"])
def test_ranks_holding_no_rows(group, seed, scheme, cu):
    # 3 (or 2 and 3) tokens over up to 4 ranks: some ranks hold nothing; the gradient of o.sum()
    # arrives expanded (stride 0), empty on those ranks.
    shape = (1, 3, 2, 32) if cu is None else (5, 2, 32)
    q, k, v, _ = make_inputs(seed, shape, shape, torch.float32)
    sd = 0 if cu is not None else 1
    ql, kl, vl = (ra.shard(x, group, scheme=scheme, seq_dim=sd, cu_seqlens=cu).requires_grad_()
                  for x in (q, k, v))
    o = ra.ring_attention(ql, kl, vl, group, causal=True, scheme=scheme, cu_seqlens=cu)
    o.sum().backward()
    ref = refm.run(q, k, v, torch.ones_like(q), True, (-1, -1), None, cu)
    naive = refm.run(q, k, v, torch.ones_like(q), True, (-1, -1), None, cu, dtype=torch.float32)
    ours = [ra.unshard(x.detach(), group, scheme=scheme, seq_dim=sd, cu_seqlens=cu)
            for x in (o, ql.grad, kl.grad, vl.grad)]
    for name, a, r, n in zip(("O", "dQ", "dK", "dV"), ours, ref[:1] + ref[2:],
                             naive[:1] + naive[2:]):
        refm.within_2x_naive(name, a, r, n, torch.float32)


@pytest.mark.parametrize("placement", ["ulysses", "ring"])
@pytest.mark.parametrize("hkv", [4, 1], ids=["gqa", "mqa"])
def test_hybrid_ulysses_degree(comm, seed, hkv, placement):
    # Every ulysses degree U > 1 dividing the world: same sharding, same results (to rounding).
    world = comm.Get_size()
    for u in [d for d in range(2, world + 1) if world % d == 0]:
        g = ra.RingGroup.from_mpi(comm, timeout_ms=60000, ulysses_degree=u, placement=placement)
        try:
            check_case(g, seed, (1, 37, 4, 32), (1, 37, hkv, 32), torch.bfloat16, True,
                       (-1, -1), "zigzag")
            check_case(g, seed + 1, (45, 4, 32), (45, hkv, 32), torch.float32, False, (7, 2),
                       "striped", cu=[0, 20, 20, 33, 45])
        finally:
            g.close()


def test_hybrid_heads_that_do_not_split_raise_on_every_rank(comm, seed):
    world = comm.Get_size()
    if world % 2:
        pytest.skip("needs an even world")
    g = ra.RingGroup.from_mpi(comm, timeout_ms=60000, ulysses_degree=2)
    try:
        q, k, v, _ = make_inputs(seed, (1, 16, 3, 32), (1, 16, 3, 32), torch.float32)
        ql, kl, vl = (ra.shard(x, g, scheme="zigzag") for x in (q, k, v))
        with pytest.raises(ringattn.RingAttnError) as err:
            ra.ring_attention(ql, kl, vl, g)
        assert "UNSUPPORTED" in str(err.value) and "Hq=3" in str(err.value)
    finally:
        g.close()
