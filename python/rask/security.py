"""`Security`: the TLS settings of a client, as Dask's `distributed.security.Security`.

Only the fields rask uses are accepted; any other keyword raises `TypeError` naming it. A field
left out is read, when connecting, from Dask's variable for it (as `rask run` does)::

    tls_ca_file         DASK_DISTRIBUTED__COMM__TLS__CA_FILE
    tls_client_cert     DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT
    tls_client_key      DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY (default: in tls_client_cert)
    require_encryption  DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION

Each file field names a PEM file (a `str` or a path); the certificate must be signed by the
cluster's CA (docs/security.md).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["Security"]

_FILES = ("tls_ca_file", "tls_client_cert", "tls_client_key")


class Security:
    """The TLS files a `Client` connects with: `Client("tls://host:port", security=Security(...))`."""

    __slots__ = ("require_encryption", *_FILES)

    def __init__(self, require_encryption: bool | None = None, **kwargs: Any):
        unknown = sorted(k for k in kwargs if k not in _FILES)
        if unknown:
            raise TypeError(f"Security() got unsupported arguments {unknown}: rask supports {['require_encryption', *_FILES]}")
        if require_encryption is not None and not isinstance(require_encryption, bool):
            raise TypeError(f"require_encryption must be True, False or None, got {require_encryption!r}")
        self.require_encryption = require_encryption
        for name in _FILES:
            value = kwargs.get(name)
            if value is not None:
                if not isinstance(value, (str, os.PathLike)):
                    raise TypeError(f"{name} must be the path of a PEM file (str or os.PathLike), got {type(value).__name__}")
                value = os.fspath(value)
                if not value:
                    raise ValueError(f"{name} must not be empty")
            setattr(self, name, value)

    def __repr__(self) -> str:
        given = [f"{name}={getattr(self, name)!r}" for name in ("require_encryption", *_FILES) if getattr(self, name) is not None]
        return f"Security({', '.join(given)})"
