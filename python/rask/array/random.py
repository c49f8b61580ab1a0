"""Dask's `dask.array.random` on rask: uniform [0, 1) arrays generated chunk by chunk on the
workers (each chunk its own seeded stream), never sent over the network.

The values are rask's own generator's (xoshiro256++), not numpy's: the same seed and chunks give
the same array on rask, but not the numbers numpy or Dask give for that seed. Distributions other
than the uniform one (`normal`, `randint`, ...) are not supported yet.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from .. import _rask
from .core import Array, _float_dtype, _resolve_chunks, _shape

__all__ = ["RandomState", "default_rng", "random", "random_sample"]


def _random(seed: int, size: Any, chunks: Any, dtype: Any) -> Any:
    _float_dtype(dtype, "random")
    if size is None:
        raise NotImplementedError("random() without size= (one number) is not supported by rask.array; give a shape")
    shape = _shape(size)
    return Array(_rask.Array.random(list(shape), _resolve_chunks(chunks, shape), seed))


def _seed(seed: Any) -> int:
    if seed is None:
        return secrets.randbits(64)
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        return seed % (1 << 64)
    raise TypeError(f"rask.array.random takes a seed that is an int >= 0 (or None), got {seed!r}")


def random(size: Any = None, chunks: Any = "auto", dtype: Any = None, **kwargs: Any) -> Any:
    """Uniform [0, 1) float64 values of shape `size` (a new seed each call)."""
    if kwargs:
        raise TypeError(f"rask.array.random.random does not take {', '.join(sorted(kwargs))}")
    return _random(_seed(None), size, chunks, dtype)


random_sample = random


class RandomState:
    """Dask's `RandomState(seed)`: each `random()` call draws a new seed from this one's stream,
    so a state seeded alike gives the same arrays in the same order."""

    def __init__(self, seed: Any = None):
        self._seeds = np.random.default_rng(_seed(seed))

    def _next(self) -> int:
        return int(self._seeds.integers(0, 1 << 63))

    def random(self, size: Any = None, chunks: Any = "auto", dtype: Any = None, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError(f"RandomState.random does not take {', '.join(sorted(kwargs))}")
        return _random(self._next(), size, chunks, dtype)

    random_sample = random


class Generator(RandomState):
    """Dask's `default_rng(seed)`: `random(size, chunks=...)`."""


def default_rng(seed: Any = None) -> Generator:
    return Generator(seed)
