"""The same checks on CUDA tensors: single-process attention, and the ring over MPI with device
buffers staged through pinned host memory (ranks may share one GPU). Skipped without a GPU or a
library built with CUDA (they have not run yet: no GPU was available where they were written)."""
import pytest
import torch

import ringattn
import ringattn.torch as ra
import reference as refm
from test_ring import MASKS, check_case, make_inputs

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and ringattn.backend_available("cuda")),
    reason="needs a GPU and a library built with CUDA")


@pytest.fixture(scope="module", autouse=True)
def one_device_per_rank(comm):
    torch.cuda.set_device(comm.Get_rank() % torch.cuda.device_count())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("mask", ["causal", "window"])
@pytest.mark.parametrize("scheme", ["zigzag", "striped"])
def test_cuda_ring_matches_fp64(group, seed, scheme, mask, dtype):
    causal, window = MASKS[mask]
    check_case(group, seed, (1, 301, 4, 64), (1, 301, 2, 64), dtype, causal, window, scheme,
               device="cuda")


def test_cuda_packed_ring_matches_fp64(group, seed):
    check_case(group, seed, (32, 2, 128), (32, 1, 128), torch.bfloat16, True, (-1, -1), "zigzag",
               cu=[0, 9, 9, 12, 12, 31, 32], device="cuda")


def test_cuda_single_process_on_a_side_stream(seed):
    q, k, v, do = make_inputs(seed, (2, 257, 4, 128), (2, 257, 4, 128), torch.bfloat16)
    qq, kk, vv = (x.cuda().requires_grad_(True) for x in (q, k, v))
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        o, lse = ra.attention(qq, kk, vv, causal=True, return_lse=True)
        o.backward(do.cuda())
    torch.cuda.synchronize()
    ref = refm.run(q, k, v, do, True)
    naive = refm.run(q, k, v, do, True, dtype=torch.bfloat16)
    for name, a, r, n in zip(("O", "LSE", "dQ", "dK", "dV"), (o, lse, qq.grad, kk.grad, vv.grad),
                             ref, naive):
        refm.within_2x_naive(name, a.detach().cpu(), r, n, torch.bfloat16)
