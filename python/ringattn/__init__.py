"""ringattn: exact ring attention over sequences sharded across ranks.

The compiled core (``ringattn._core``) wraps the C ABI and knows nothing about torch; the torch
layer is ``ringattn.torch`` (pure Python), imported on demand::

    import ringattn.torch as ra

Errors of the library are raised as :class:`RingAttnError`, with ``status`` (the status name, e.g.
``"RINGATTN_ERROR_MISMATCH"``), ``code`` (its integer value) and ``message`` (the library's
message naming the argument and the rank).
"""
from . import _core
from ._core import RingAttnError

__all__ = ["RingAttnError", "version", "backend_available", "shard_length", "shard_positions"]

SCHEMES = {
    "contiguous": _core.SCHEME_CONTIGUOUS,
    "zigzag": _core.SCHEME_ZIGZAG,
    "striped": _core.SCHEME_STRIPED,
}

# Status codes of ringattn.h, for errors raised on the Python side with the library's names.
_STATUS_CODES = {
    "RINGATTN_ERROR_INVALID_ARGUMENT": 1,
    "RINGATTN_ERROR_NULL_POINTER": 2,
    "RINGATTN_ERROR_SHAPE_MISMATCH": 3,
    "RINGATTN_ERROR_BAD_STRIDE": 4,
    "RINGATTN_ERROR_UNSUPPORTED": 5,
    "RINGATTN_ERROR_OUT_OF_MEMORY": 6,
    "RINGATTN_ERROR_CUDA": 7,
    "RINGATTN_ERROR_COMM": 8,
    "RINGATTN_ERROR_TIMEOUT": 9,
    "RINGATTN_ERROR_MISMATCH": 10,
    "RINGATTN_ERROR_INTERNAL": 11,
}


def make_error(status, message):
    """A RingAttnError like the ones the core raises (status name, code, message)."""
    err = RingAttnError(f"{status}: {message}")
    err.status = status
    err.code = _STATUS_CODES.get(status, -1)
    err.message = message
    return err


def scheme_code(scheme):
    try:
        return SCHEMES[scheme]
    except KeyError:
        raise make_error("RINGATTN_ERROR_INVALID_ARGUMENT",
                         f"unknown scheme {scheme!r}; expected one of {sorted(SCHEMES)}") from None


def version():
    """Runtime version of the library as (major, minor, patch)."""
    code = _core.version()
    return (code // 10000, code // 100 % 100, code % 100)


def backend_available(backend):
    """True if the library was built with `backend` ("cpu" or "cuda")."""
    return _core.backend_available(_core.BACKEND_CUDA if backend == "cuda" else _core.BACKEND_CPU)


def shard_length(seq_len, world, rank, scheme="zigzag"):
    """Tokens of a `seq_len`-token sequence that rank `rank` of `world` holds."""
    return _core.shard_length(scheme_code(scheme), int(seq_len), int(world), int(rank))


def shard_positions(seq_len, world, rank, scheme="zigzag"):
    """Global positions (a list of ints) of rank `rank`'s local tokens, in local order."""
    return _core.shard_positions(scheme_code(scheme), int(seq_len), int(world), int(rank))
