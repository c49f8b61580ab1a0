"""Contract tests: rask's scheduler HTTP API against a real Dask scheduler's."""
