"""RingGroup.from_torch on the CPU: torch.distributed (gloo) under mpirun, ranks from mpi4py."""
import socket

import pytest
import torch
import torch.distributed as dist

import ringattn
import ringattn.torch as ra


@pytest.fixture(scope="module")
def torch_world(comm):
    created = not dist.is_initialized()
    if created:
        port = None
        if comm.Get_rank() == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        port = comm.bcast(port, root=0)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                rank=comm.Get_rank(), world_size=comm.Get_size())
    yield
    # Destroyed here, with every rank past its collectives: a gloo group left for interpreter
    # exit can abort the process ("terminate called without an active exception") when its
    # worker thread frees a tensor while Python is finalizing (seen with torch 1.13).
    if created:
        comm.Barrier()
        dist.destroy_process_group()


def test_from_torch_refuses_cpu_tensors_on_every_rank(torch_world):
    group = ra.RingGroup.from_torch()
    assert (group.rank, group.world) == (dist.get_rank(), dist.get_world_size())
    q = torch.randn(1, 4, 2, 32)
    with pytest.raises(ringattn.RingAttnError) as info:
        ra.ring_attention(q, q, q, group)
    assert info.value.status == "RINGATTN_ERROR_UNSUPPORTED"
    assert "from_mpi" in info.value.message
    group.close()


def test_unshard_over_a_torch_group(torch_world):
    group = ra.RingGroup.from_torch()
    x = torch.arange(2 * 19 * 3, dtype=torch.float32).view(2, 19, 3)
    for scheme in ("contiguous", "zigzag", "striped"):
        assert torch.equal(ra.unshard(ra.shard(x, group, scheme=scheme), group, scheme=scheme), x)
    group.close()
