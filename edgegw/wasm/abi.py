"""proxy-wasm ABI v0.2.1 constants and the header-map wire format.

Numbers are from proxy-wasm/spec abi-versions/v0.2.1/README.md.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum

from edgegw.types import Headers
from edgegw.wasm import _native

ABI_MARKERS = ("proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0")


class Status(IntEnum):
    OK = 0
    NOT_FOUND = 1
    BAD_ARGUMENT = 2
    SERIALIZATION_FAILURE = 3
    PARSE_FAILURE = 4
    INVALID_MEMORY_ACCESS = 6
    EMPTY = 7
    CAS_MISMATCH = 8
    INTERNAL_FAILURE = 10
    UNIMPLEMENTED = 12


class Action(IntEnum):
    CONTINUE = 0
    PAUSE = 1  # StopIteration; for bodies also StopIterationAndBuffer


class MapType(IntEnum):
    REQUEST_HEADERS = 0
    REQUEST_TRAILERS = 1
    RESPONSE_HEADERS = 2
    RESPONSE_TRAILERS = 3
    GRPC_RECEIVE_INITIAL_METADATA = 4
    GRPC_RECEIVE_TRAILING_METADATA = 5
    HTTP_CALL_RESPONSE_HEADERS = 6
    HTTP_CALL_RESPONSE_TRAILERS = 7


class BufferType(IntEnum):
    HTTP_REQUEST_BODY = 0
    HTTP_RESPONSE_BODY = 1
    DOWNSTREAM_DATA = 2
    UPSTREAM_DATA = 3
    HTTP_CALL_RESPONSE_BODY = 4
    GRPC_RECEIVE_BUFFER = 5
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7


class StreamType(IntEnum):
    REQUEST = 0
    RESPONSE = 1
    DOWNSTREAM = 2
    UPSTREAM = 3


class MetricType(IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


class LogLevel(IntEnum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    CRITICAL = 5


def encode_pairs(pairs: Headers) -> bytes:
    """count, (key_len, value_len)*, then each key and value NUL-terminated (u32 LE)."""
    sizes = b"".join(struct.pack("<II", len(k), len(v)) for k, v in pairs)
    data = b"".join(k + b"\0" + v + b"\0" for k, v in pairs)
    return struct.pack("<I", len(pairs)) + sizes + data


#: The inverse of ``encode_pairs``; None when the data is malformed. In C (every
#: http_call of a filter decodes one), reading as ``decode_pairs_py`` reads
#: (tests/unit/test_wasm_abi_pairs.py compares them).
decode_pairs: Callable[[bytes], Headers | None] = _native.decode_pairs


def decode_pairs_py(data: bytes) -> Headers | None:
    """``decode_pairs``, in Python: the reference the C one is tested against."""
    if len(data) < 4:
        return [] if not data else None
    (count,) = struct.unpack_from("<I", data)
    pos = 4 + 8 * count
    if pos > len(data):
        return None
    out: Headers = []
    size = len(data)
    for klen, vlen in struct.iter_unpack("<II", data[4 : 4 + 8 * count]):
        value = pos + klen + 1
        end = value + vlen + 1
        if end > size:
            return None
        out.append((data[pos : pos + klen], data[value : value + vlen]))
        pos = end
    return out
