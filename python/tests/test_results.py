"""How encoded results become Python values: pickles (the python family's results) and the
engine's native values (postcard of rask_core::Value, written out by hand here), and the errors for
what Python cannot read."""

from __future__ import annotations

import pickle
import struct

import pytest

from rask import _rask

VALUE, PICKLED = 0, 1


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def zigzag(i: int) -> bytes:
    return varint((i << 1) ^ (i >> 63))


# rask_core::Value's variants, in order: None, Bool, Int, Float, Str, Bytes, List.
def none() -> bytes:
    return varint(0)


def boolean(b: bool) -> bytes:
    return varint(1) + bytes([b])


def integer(i: int) -> bytes:
    return varint(2) + zigzag(i)


def floating(x: float) -> bytes:
    return varint(3) + struct.pack("<d", x)


def string(s: str) -> bytes:
    data = s.encode()
    return varint(4) + varint(len(data)) + data


def blob(b: bytes) -> bytes:
    return varint(5) + varint(len(b)) + b


def listing(*items: bytes) -> bytes:
    return varint(6) + varint(len(items)) + b"".join(items)


def test_native_values_become_python_objects():
    encoded = b"\x00" + listing(
        none(), boolean(True), integer(-7), integer(2**62), floating(2.5), string("héllo"),
        blob(b"\x00\x01"), listing(integer(1)),
    )  # fmt: skip
    assert _rask.decode_result(encoded) == (
        VALUE,
        [None, True, -7, 2**62, 2.5, "héllo", b"\x00\x01", [1]],
    )
    assert _rask.decode_result(b"\x00" + integer(42)) == (VALUE, 42)


def test_pickles_are_handed_over_as_bytes():
    body = pickle.dumps({"a": 1}, protocol=5)
    kind, payload = _rask.decode_result(b"\x03" + body)
    assert kind == PICKLED and pickle.loads(payload) == {"a": 1}


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        (b"", "is empty"),
        (b"\x01abc", "format tag 1"),
        (b"\x02abc", "format tag 2"),
        (b"\x00\x09", "cannot be decoded"),
        (b"\x00" + integer(1) + b"\x00", "cannot be decoded"),
    ],
)
def test_what_python_cannot_read_is_an_error_saying_why(encoded: bytes, message: str):
    with pytest.raises(RuntimeError, match=message):
        _rask.decode_result(encoded)
