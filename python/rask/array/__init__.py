"""Dask's `dask.array` on rask: chunked n-d arrays computed by rask's native array kernels.

    import rask.array as da
    from rask.distributed import Client

    client = Client("tcp://scheduler:8786")
    x = da.random.random((8000, 8000), chunks=(1000, 1000))
    y = (x.dot(x.T + 1) - x.mean()).std()
    y.compute()                       # a numpy float64

Every operation builds a graph of the array family's kernels (`array.eval`, `array.partial`,
`array.matmul`, ...), run by the workers in Rust: no Python runs on the cluster, except the
function of `from_delayed`. `compute()` sends the graph through the default client (the last
`Client` created, as in Dask) or the one given as `scheduler=`, and assembles the chunks into a
numpy array from their raw bytes.

Values are float64. Integer and boolean inputs are converted to float64; comparisons give
arrays that compute to numpy booleans, `argmin`/`argmax` to int64; other dtypes (complex,
strings, objects) raise `TypeError`. Not (yet) as in Dask: broadcasting between arrays of
different shapes, fancy and boolean indexing, slice steps other than 1, `None` in indices,
`keepdims=`, reductions over several (but not all) axes, `dot` of other than 2-d arrays, and
`transpose` with axes other than reversed; each raises `NotImplementedError` naming it.
"""

from . import core, random
from .core import (  # noqa: A004 - numpy's names (abs, max, min, sum)
    Array,
    abs,
    absolute,
    arange,
    argmax,
    argmin,
    asarray,
    cos,
    dot,
    exp,
    from_array,
    from_delayed,
    full,
    log,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    ones,
    sin,
    sqrt,
    std,
    sum,
    transpose,
    var,
    zeros,
)

__all__ = sorted([*core.__all__, "random"])
