"""ringattn for PyTorch: ring attention with autograd, sharding helpers, communicators.

    import ringattn.torch as ra
    group = ra.RingGroup.from_mpi(MPI.COMM_WORLD)
    q, k, v = (ra.shard(x, group) for x in (q_glob, k_glob, v_glob))   # [B, S_local, H, D]
    o = ra.ring_attention(q, k, v, group, causal=True)                  # differentiable

Pure Python over ringattn._core (no torch headers), so the same build serves torch 1.13 and 2.x.
On torch >= 2.4 the calls are custom ops (``ringattn::attn_fwd`` / ``ringattn::attn_bwd``) with
fake and autograd registrations, so torch.compile(fullgraph=True) traces through them; older
torch uses autograd.Function. See docs/python.md.
"""
import collections
import itertools
import os

import torch

from . import _core, make_error, scheme_code
from ._core import RingAttnError

__all__ = ["RingAttnError", "RingGroup", "ring_attention", "attention", "shard", "unshard",
           "positions"]

_DTYPES = {torch.float32: _core.FLOAT32, torch.float16: _core.FLOAT16,
           torch.bfloat16: _core.BFLOAT16}
_INVALID_DTYPE = 99  # a descriptor the library refuses (to make a local error every rank's)


def _use_custom_op():
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    available = (major, minor) >= (2, 4) and hasattr(torch.library, "custom_op")
    forced = os.environ.get("RINGATTN_TORCH_IMPL", "")
    if forced == "custom_op" and not available:
        raise ImportError(f"RINGATTN_TORCH_IMPL=custom_op needs torch >= 2.4 "
                          f"(this is {torch.__version__})")
    if forced in ("function", "custom_op"):
        return forced == "custom_op"
    return available


# ---- descriptors ---------------------------------------------------------------------------

def _desc(t):
    """(ptr, dtype, shape, strides) of a tensor for the core; no copy."""
    return (t.data_ptr(), _DTYPES[t.dtype], tuple(t.shape), tuple(t.stride()))


def _contig(t):
    """The tensor itself when its memory is dense row-major, else a contiguous copy. An empty
    tensor (a rank that holds no row) counts as contiguous for torch whatever its strides (an
    expanded gradient has stride 0 everywhere), so it is replaced by a fresh one."""
    if t.numel() == 0:
        return torch.empty(t.shape, dtype=t.dtype, device=t.device)
    return t if t.is_contiguous() else t.contiguous()


def _stream(t):
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


def _backend(t):
    return _core.BACKEND_CUDA if t.is_cuda else _core.BACKEND_CPU


def _lse_shape(q):
    # fixed [B, S, Hq, D] -> [B, Hq, S]; packed [T, Hq, D] -> [Hq, T]
    if q.dim() == 4:
        return (q.shape[0], q.shape[2], q.shape[1])
    return (q.shape[1], q.shape[0])


def _check_inputs(q, k, v):
    """A message for inputs the core cannot even describe (dtype, device, rank), else None."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            return f"argument '{name}' is not a torch.Tensor"
        if t.dtype not in _DTYPES:
            return (f"argument '{name}' has dtype {t.dtype}; ringattn runs float32, float16 and "
                    f"bfloat16")
        if t.dim() not in (3, 4):
            return (f"argument '{name}' has {t.dim()} dims; expected [B, S, H, D] or packed "
                    f"[T, H, D]")
        if t.device != q.device:
            return f"argument '{name}' is on {t.device}, q on {q.device}"
    if not (q.dtype == k.dtype == v.dtype):
        return f"q, k and v have different dtypes ({q.dtype}, {k.dtype}, {v.dtype})"
    return None


def _cu_tuple(cu_seqlens):
    if cu_seqlens is None:
        return None
    if isinstance(cu_seqlens, torch.Tensor):
        cu_seqlens = cu_seqlens.detach().cpu().tolist()
    return tuple(int(x) for x in cu_seqlens)


# ---- groups ---------------------------------------------------------------------------------

_GROUPS = {}              # id -> RingGroup, so that custom ops can name a group by an int
_GROUP_IDS = itertools.count()


def _choice(what, name, choices):
    """The C enum value of one of the names in `choices` (a dict), or an INVALID_ARGUMENT
    error naming the expected ones."""
    if name not in choices:
        expected = ", ".join(repr(c) for c in choices)
        raise make_error("RINGATTN_ERROR_INVALID_ARGUMENT",
                         f"unknown {what} {name!r}; expected one of {expected}")
    return choices[name]


def _local_kernel(name):
    """ringattn_local_kernel_t of a local-kernel name."""
    return _choice("local_kernel", name, {"own": 0, "cudnn": 1})


def _placement(name):
    """ringattn_placement_t of a placement name."""
    return _choice("placement", name, {"ulysses": 0, "ring": 1, "auto": 2})


class RingGroup:
    """The ranks one sharded sequence spans, with ringattn contexts over their communicator.

    Contexts are created on the first ring call of each device type (collective, like the call).
    ``use_plans=True`` runs each problem through a ring plan created on its first call and cached
    (up to ``max_plans``): later calls do no agreement between ranks. The price (ringattn_ring.h):
    an argument that differs on one rank after the plan exists fails that rank at once and the
    others only after the timeout. The default (one-shot calls) agrees on every call, so any
    mismatch is an error on every rank at once; the context still caches its plan and workspace,
    so repeated calls of one problem allocate nothing.
    """

    def __init__(self, rank, world, make_context, use_plans=False, max_plans=8, comm=None,
                 process_group=None, local_kernel="own"):
        self.local_kernel = _local_kernel(local_kernel)
        self.rank = int(rank)
        self.world = int(world)
        self.comm = comm
        self.process_group = process_group
        self.use_plans = bool(use_plans)
        self.max_plans = int(max_plans)
        self._make_context = make_context
        self._contexts = {}
        self._plans = collections.OrderedDict()
        self.id = next(_GROUP_IDS)
        _GROUPS[self.id] = self

    # -- constructors --
    @classmethod
    def from_mpi(cls, comm, timeout_ms=0, chunks=0, transport="mpi", use_plans=False,
                 max_plans=8, ulysses_degree=1, placement="ulysses", local_kernel="own"):
        """A group over an mpi4py communicator (collective). CPU tensors use the MPI transport;
        CUDA tensors use MPI with pinned-host staging (transport="mpi") or an NCCL communicator
        bootstrapped over MPI (transport="nccl").

        ``ulysses_degree`` U > 1 runs the hybrid layout (docs/ring.md, "Ulysses and hybrid"):
        U ranks exchange heads by all-to-all, rings of world / U ranks between them;
        ``placement`` ("ulysses", "ring" or "auto") says which ranks form the all-to-all groups.
        The tensors' sharding does not change with U.

        ``local_kernel="cudnn"`` computes each rank's blocks with cuDNN's fused attention where it
        can (CUDA tensors in float16/bfloat16, a library built with cuDNN; docs/cuda.md, "The
        cuDNN path"), ringattn's kernels elsewhere; "own" (the default) keeps ringattn's."""
        if transport not in ("mpi", "nccl"):
            raise make_error("RINGATTN_ERROR_INVALID_ARGUMENT",
                             f"unknown transport {transport!r}; expected 'mpi' or 'nccl'")
        place = _placement(placement)
        fhandle = comm.py2f()

        def make(backend):
            return _core.Context.from_mpi_fortran(
                fhandle, backend, timeout_ms=timeout_ms, chunks=chunks,
                nccl=(transport == "nccl" and backend == _core.BACKEND_CUDA),
                ulysses_degree=ulysses_degree, placement=place)

        return cls(comm.Get_rank(), comm.Get_size(), make, use_plans, max_plans, comm=comm,
                   local_kernel=local_kernel)

    @classmethod
    def from_torch(cls, process_group=None, timeout_ms=0, chunks=0, use_plans=False,
                   max_plans=8, ulysses_degree=1, placement="ulysses", local_kernel="own"):
        """A group over a torch.distributed process group (default: the world), for CUDA
        tensors: the library's NCCL transport, its communicator bootstrapped over the group.

        Needs a library and core built with CUDA and NCCL. CPU tensors are refused with
        RINGATTN_ERROR_UNSUPPORTED: use from_mpi (torchrun sets no MPI up, so CPU training under
        torchrun has no ringattn transport yet)."""
        import torch.distributed as dist
        if not dist.is_available() or not dist.is_initialized():
            raise make_error("RINGATTN_ERROR_INVALID_ARGUMENT",
                             "torch.distributed is not initialized (init_process_group first)")
        rank = dist.get_rank(process_group)
        world = dist.get_world_size(process_group)
        place = _placement(placement)

        def make(backend):
            if backend != _core.BACKEND_CUDA or not hasattr(_core.Context, "from_nccl_unique_id"):
                raise make_error(
                    "RINGATTN_ERROR_UNSUPPORTED",
                    "RingGroup.from_torch runs CUDA tensors over NCCL only"
                    + ("" if hasattr(_core.Context, "from_nccl_unique_id")
                       else " (this build of ringattn._core has no NCCL)")
                    + "; for CPU tensors create the group with RingGroup.from_mpi(comm)")
            uid = [_core.nccl_unique_id() if rank == 0 else None]
            dist.broadcast_object_list(uid, src=dist.get_global_rank(process_group, 0)
                                       if process_group is not None else 0,
                                       group=process_group)
            return _core.Context.from_nccl_unique_id(uid[0], rank, world,
                                                     torch.cuda.current_device(),
                                                     timeout_ms=timeout_ms, chunks=chunks,
                                                     ulysses_degree=ulysses_degree,
                                                     placement=place)

        return cls(rank, world, make, use_plans, max_plans, process_group=process_group,
                   local_kernel=local_kernel)

    # -- lifetime --
    def close(self):
        """Frees plans and contexts (not collective; the communicator stays the caller's)."""
        for plan in self._plans.values():
            plan.close()
        self._plans.clear()
        for ctx in self._contexts.values():
            ctx.close()
        self._contexts.clear()
        _GROUPS.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def context(self, device):
        backend = _core.BACKEND_CUDA if torch.device(device).type == "cuda" else _core.BACKEND_CPU
        ctx = self._contexts.get(backend)
        if ctx is None:
            ctx = self._make_context(backend)
            self._contexts[backend] = ctx
        return ctx

    def last_stats(self, device="cpu"):
        """Timing of the last ring call on this rank (ringattn_ring_stats_t as a dict)."""
        return self.context(device).last_stats()

    # -- ring calls on contiguous tensors --
    def _plan(self, ctx, q, k, v, prm):
        cu = prm[5]
        key = ((q.device, q.dtype, tuple(q.shape), tuple(k.shape), tuple(v.shape)) + prm[:5]
               + (None if cu is None else tuple(cu),))
        plan = self._plans.get(key)
        if plan is None:
            plan = ctx.plan(_desc(q), _desc(k), _desc(v), *prm, local_kernel=self.local_kernel)
            self._plans[key] = plan
            while len(self._plans) > self.max_plans:
                self._plans.popitem(last=False)[1].close()
        else:
            self._plans.move_to_end(key)
        return plan

    def _forward(self, q, k, v, o, lse, prm):
        with _device_of(q):
            ctx = self.context(q.device)
            if self.use_plans:
                self._plan(ctx, q, k, v, prm).forward(_desc(q), _desc(k), _desc(v), _desc(o),
                                                      _desc(lse), _stream(q))
            else:
                ctx.forward(_desc(q), _desc(k), _desc(v), _desc(o), _desc(lse), *prm, _stream(q),
                            local_kernel=self.local_kernel)

    def _backward(self, q, k, v, o, lse, do, dq, dk, dv, prm):
        with _device_of(q):
            ctx = self.context(q.device)
            if self.use_plans:
                self._plan(ctx, q, k, v, prm).backward(
                    _desc(q), _desc(k), _desc(v), _desc(o), _desc(lse), _desc(do), _desc(dq),
                    _desc(dk), _desc(dv), _stream(q))
            else:
                ctx.backward(_desc(q), _desc(k), _desc(v), _desc(o), _desc(lse), _desc(do),
                             _desc(dq), _desc(dk), _desc(dv), *prm, _stream(q),
                             local_kernel=self.local_kernel)

    def _fail_everywhere(self, device, message):
        """Raises `message` here after making the ranks' agreement fail on every rank: a call
        with a descriptor the library refuses, so that a local problem never leaves the other
        ranks waiting."""
        ctx = self.context(device)
        bad = (0, _INVALID_DTYPE, (1, 1, 1, 32), (32, 32, 32, 1))
        try:
            ctx.forward(bad, bad, bad, bad, None, False, -1, -1, 0.0, 0, None, 0)
        except RingAttnError:
            pass
        raise make_error("RINGATTN_ERROR_INVALID_ARGUMENT", f"rank {self.rank}: {message}")

    # -- all-gather of host objects (unshard) --
    def _allgather(self, obj):
        if self.comm is not None:
            return self.comm.allgather(obj)
        import torch.distributed as dist
        out = [None] * self.world
        dist.all_gather_object(out, obj, group=self.process_group)
        return out


class _device_of:
    """Makes q's CUDA device current for a call (no-op on the CPU)."""

    def __init__(self, t):
        self.ctx = torch.cuda.device(t.device) if t.is_cuda else None

    def __enter__(self):
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


# ---- the kernels' calls on tensors (no autograd) -------------------------------------------

def _fwd_impl(q, k, v, group_id, causal, wl, wr, scale, scheme, cu):
    q, k, v = _contig(q), _contig(k), _contig(v)
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty(_lse_shape(q), dtype=torch.float32, device=q.device)
    cu = None if cu is None else list(cu)
    if group_id < 0:
        with _device_of(q):
            _core.attention_forward(_desc(q), _desc(k), _desc(v), _desc(o), _desc(lse), causal,
                                    wl, wr, scale, cu, _backend(q), _stream(q))
    else:
        _GROUPS[group_id]._forward(q, k, v, o, lse, (causal, wl, wr, scale, scheme, cu))
    return o, lse


def _bwd_impl(q, k, v, o, lse, do, group_id, causal, wl, wr, scale, scheme, cu):
    q, k, v, o, lse, do = (_contig(t) for t in (q, k, v, o, lse, do))
    if do.dtype != q.dtype:
        do = do.to(q.dtype)
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    cu = None if cu is None else list(cu)
    if group_id < 0:
        with _device_of(q):
            _core.attention_backward(_desc(q), _desc(k), _desc(v), _desc(o), _desc(lse),
                                     _desc(do), _desc(dq), _desc(dk), _desc(dv), causal, wl, wr,
                                     scale, cu, _backend(q), _stream(q))
    else:
        _GROUPS[group_id]._backward(q, k, v, o, lse, do, dq, dk, dv,
                                    (causal, wl, wr, scale, scheme, cu))
    return dq, dk, dv


# ---- autograd: torch.library custom ops (torch >= 2.4) or autograd.Function -----------------

class _AttnFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, group_id, causal, wl, wr, scale, scheme, cu):
        o, lse = _fwd_impl(q, k, v, group_id, causal, wl, wr, scale, scheme, cu)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.prm = (group_id, causal, wl, wr, scale, scheme, cu)
        ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    def backward(ctx, do, _dlse):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _bwd_impl(q, k, v, o, lse, do, *ctx.prm)
        return dq, dk, dv, None, None, None, None, None, None, None


_fwd_op = None
if _use_custom_op():
    from typing import List, Optional, Tuple

    @torch.library.custom_op("ringattn::attn_fwd", mutates_args=())
    def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group_id: int, causal: bool,
                wl: int, wr: int, scale: float, scheme: int,
                cu: Optional[List[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
        return _fwd_impl(q, k, v, group_id, causal, wl, wr, scale, scheme, cu)

    @_fwd_op.register_fake
    def _(q, k, v, group_id, causal, wl, wr, scale, scheme, cu):
        return (torch.empty_like(q, memory_format=torch.contiguous_format),
                q.new_empty(_lse_shape(q), dtype=torch.float32))

    @torch.library.custom_op("ringattn::attn_bwd", mutates_args=())
    def _bwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                lse: torch.Tensor, do: torch.Tensor, group_id: int, causal: bool, wl: int,
                wr: int, scale: float, scheme: int,
                cu: Optional[List[int]]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _bwd_impl(q, k, v, o, lse, do, group_id, causal, wl, wr, scale, scheme, cu)

    @_bwd_op.register_fake
    def _(q, k, v, o, lse, do, group_id, causal, wl, wr, scale, scheme, cu):
        return (torch.empty_like(q, memory_format=torch.contiguous_format),
                torch.empty_like(k, memory_format=torch.contiguous_format),
                torch.empty_like(v, memory_format=torch.contiguous_format))

    def _setup_context(ctx, inputs, output):
        q, k, v = inputs[:3]
        o, lse = output
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.prm = tuple(inputs[3:])

    def _op_backward(ctx, do, _dlse):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _bwd_op(q, k, v, o, lse, do, *ctx.prm)
        return dq, dk, dv, None, None, None, None, None, None, None

    _fwd_op.register_autograd(_op_backward, setup_context=_setup_context)


def _call(q, k, v, group, causal, window, softmax_scale, scheme, cu_seqlens):
    if softmax_scale is not None and not softmax_scale > 0:
        problem = f"softmax_scale must be positive (got {softmax_scale})"
    else:
        problem = _check_inputs(q, k, v)
    if problem is not None:
        if group is not None:
            group._fail_everywhere(q.device if isinstance(q, torch.Tensor) else "cpu", problem)
        raise make_error("RINGATTN_ERROR_INVALID_ARGUMENT", problem)
    wl, wr = (int(window[0]), int(window[1]))
    scale = 0.0 if softmax_scale is None else float(softmax_scale)
    cu = _cu_tuple(cu_seqlens)
    cu = None if cu is None else list(cu)
    gid = -1 if group is None else group.id
    sc = scheme_code(scheme)
    if _fwd_op is not None:
        return _fwd_op(q, k, v, gid, bool(causal), wl, wr, scale, sc, cu)
    return _AttnFunction.apply(q, k, v, gid, bool(causal), wl, wr, scale, sc, cu)


# ---- public API -------------------------------------------------------------------------------

def ring_attention(q, k, v, group, causal=False, window=(-1, -1), softmax_scale=None,
                   scheme="zigzag", cu_seqlens=None, return_lse=False):
    """Attention of this rank's queries over the whole sharded sequence (collective over group).

    q: [B, S_local, Hq, D] (or packed [T_local, Hq, D] with the GLOBAL cu_seqlens, B+1 offsets);
    k, v: at Hkv heads (Hq % Hkv == 0). CPU or CUDA; float32, float16, bfloat16. Local rows in
    the scheme's order (shard / positions). window = (left, right), -1 unbounded; softmax_scale
    None = 1/sqrt(D). Returns o (q's dtype, differentiable in q, k, v), or (o, lse) with lse
    float32 [B, Hq, S_local] (packed [Hq, T_local]; not differentiable)."""
    o, lse = _call(q, k, v, group, causal, window, softmax_scale, scheme, cu_seqlens)
    return (o, lse) if return_lse else o


def attention(q, k, v, causal=False, window=(-1, -1), softmax_scale=None, cu_seqlens=None,
              return_lse=False):
    """Single-process attention over the whole (local) sequence with the same kernels."""
    o, lse = _call(q, k, v, None, causal, window, softmax_scale, "contiguous", cu_seqlens)
    return (o, lse) if return_lse else o


def _group_rank_world(group):
    return int(group.rank), int(group.world)


_POS_CACHE = {}


def _positions_list(seq_len, world, rank, scheme):
    key = (int(seq_len), world, rank, scheme)
    pos = _POS_CACHE.get(key)
    if pos is None:
        pos = _core.shard_positions(scheme_code(scheme), int(seq_len), world, rank)
        if len(_POS_CACHE) > 256:
            _POS_CACHE.clear()
        _POS_CACHE[key] = pos
    return pos


def _local_index(group_rank_world, scheme, seq_len, cu, device):
    """Global index (along the sequence / token dim) of each local row, from the library."""
    rank, world = group_rank_world
    if cu is None:
        pos = _positions_list(seq_len, world, rank, scheme)
    else:
        pos = []
        for start, end in zip(cu[:-1], cu[1:]):
            pos.extend(start + p for p in _positions_list(end - start, world, rank, scheme))
    return torch.tensor(pos, dtype=torch.long, device=device)


def positions(seq_len, group, scheme="zigzag", cu_seqlens=None, device=None):
    """Global positions (int64 tensor) of this rank's local rows: for RoPE. With cu_seqlens, the
    position of each local token within its own sequence (packed batches)."""
    rank, world = _group_rank_world(group)
    cu = _cu_tuple(cu_seqlens)
    if cu is None:
        pos = _positions_list(seq_len, world, rank, scheme)
    else:
        pos = []
        for start, end in zip(cu[:-1], cu[1:]):
            pos.extend(_positions_list(end - start, world, rank, scheme))
    return torch.tensor(pos, dtype=torch.long, device=device)


def _seq_dim(x, seq_dim, cu):
    if seq_dim is None:
        seq_dim = 0 if cu is not None else 1
    return seq_dim % x.dim()


def shard(x_global, group, scheme="zigzag", seq_dim=None, cu_seqlens=None):
    """This rank's shard of a global tensor along seq_dim (default 1, or 0 with cu_seqlens for
    packed [T, ...] tensors). Differentiable (an index_select). Works for any dtype and device;
    `group` is a RingGroup or anything with .rank and .world."""
    cu = _cu_tuple(cu_seqlens)
    dim = _seq_dim(x_global, seq_dim, cu)
    if cu is not None and cu[-1] != x_global.shape[dim]:
        raise make_error("RINGATTN_ERROR_SHAPE_MISMATCH",
                         f"cu_seqlens ends at {cu[-1]} but the tensor has {x_global.shape[dim]} "
                         f"tokens along dim {dim}")
    idx = _local_index(_group_rank_world(group), scheme, x_global.shape[dim], cu, x_global.device)
    return x_global.index_select(dim, idx)


class _Unshard(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, scheme, dim, cu, seq_len):
        parts = group._allgather(x.detach().cpu())
        shape = list(x.shape)
        shape[dim] = seq_len
        out = torch.empty(shape, dtype=x.dtype)
        for r, part in enumerate(parts):
            idx = _local_index((r, group.world), scheme, seq_len, cu, "cpu")
            if idx.numel() != part.shape[dim]:
                raise make_error("RINGATTN_ERROR_SHAPE_MISMATCH",
                                 f"rank {r} holds {part.shape[dim]} rows along dim {dim}, its "
                                 f"shard of {seq_len} is {idx.numel()}")
            out.index_copy_(dim, idx, part)
        ctx.idx = _local_index((group.rank, group.world), scheme, seq_len, cu, x.device)
        ctx.dim = dim
        return out.to(x.device)

    @staticmethod
    def backward(ctx, grad):
        # Every rank holds the same global result: the gradient of a loss computed alike on every
        # rank reaches each shard through its own rows.
        return grad.index_select(ctx.dim, ctx.idx), None, None, None, None, None


def unshard(x_local, group, scheme="zigzag", seq_dim=None, cu_seqlens=None):
    """The global tensor from every rank's shard (an all-gather over the group; every rank gets
    the whole). Differentiable: the gradient of each rank's copy flows to its own rows."""
    cu = _cu_tuple(cu_seqlens)
    dim = _seq_dim(x_local, seq_dim, cu)
    if cu is not None:
        seq_len = cu[-1]
    else:
        lengths = group._allgather(int(x_local.shape[dim]))
        seq_len = sum(lengths)
    return _Unshard.apply(x_local, group, scheme, dim, cu, seq_len)
