"""pytest under mpirun: every rank runs the same tests in the same order (so that the collectives
of each test meet); inputs come from one seed drawn on rank 0 and broadcast, a fresh one per
case (print it with -s; replay with RINGATTN_TEST_SEED=<seed>)."""
import os
import random

import pytest

from mpi4py import MPI  # noqa: F401  (initializes MPI before ringattn contexts are made)

import ringattn.torch as ra


@pytest.fixture(scope="session")
def comm():
    return MPI.COMM_WORLD


@pytest.fixture(scope="session")
def group(comm):
    g = ra.RingGroup.from_mpi(comm, timeout_ms=60000)
    yield g
    g.close()


@pytest.fixture(scope="session")
def plan_group(comm):
    g = ra.RingGroup.from_mpi(comm, timeout_ms=60000, use_plans=True)
    yield g
    g.close()


@pytest.fixture
def seed(comm):
    fixed = os.environ.get("RINGATTN_TEST_SEED")
    s = int(fixed) if fixed else random.SystemRandom().randrange(2**31)
    s = comm.bcast(s, root=0)
    print(f"seed {s}")
    return s
