"""rask: Dask's API on rask, a cluster engine in Rust.

`rask.distributed` holds the client (`Client`, `LocalCluster`, futures); `rask.delayed`,
`rask.compute`, `rask.persist` and `rask.visualize` are Dask's delayed API. Those are imported on
first use, so a worker's Python process can import `rask._deps` without the native client.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("rask")
except PackageNotFoundError:  # imported from a source tree, not installed
    __version__ = "0+unknown"

# Names of `rask._delayed` offered here, as `dask` offers them.
_DELAYED_API = ("Delayed", "compute", "delayed", "persist", "visualize")


def __getattr__(name: str) -> Any:
    if name in _DELAYED_API:
        from . import _delayed

        return getattr(_delayed, name)
    raise AttributeError(f"module 'rask' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(list(globals()) + list(_DELAYED_API))
