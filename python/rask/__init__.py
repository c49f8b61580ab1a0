"""rask: Dask's API on rask, a cluster engine in Rust.

`rask.distributed` holds the client (`Client`, `LocalCluster`, futures). This module imports
nothing else, so a worker's Python process can import `rask._deps` without the native client.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rask")
except PackageNotFoundError:  # imported from a source tree, not installed
    __version__ = "0+unknown"
