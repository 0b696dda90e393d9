"""A serialized header map (proxy-wasm: count, sizes, NUL-terminated keys and values)
decoded in C (``_native.decode_pairs``) exactly as the Python reference decodes it,
malformed ones included."""

from __future__ import annotations

import random
import struct

from edgegw.wasm.abi import decode_pairs, decode_pairs_py, encode_pairs

PAIRS = [(b":method", b"POST"), (b":path", b"/v1/ratelimit"), (b"x", b""), (b"", b"v\0w")]


def test_c_decodes_as_the_python_reference() -> None:
    whole = encode_pairs(PAIRS)
    cases = [b"", b"\x01", b"\x00\x00\x00\x00", whole, encode_pairs([])]
    cases += [whole[:cut] for cut in range(len(whole))]  # every truncation
    cases.append(struct.pack("<I", 2**31 - 1) + b"\x00" * 8)  # a count no data holds
    cases.append(struct.pack("<III", 1, 2**32 - 1, 0) + b"ab\0\0")  # a size past the end
    rng = random.Random(7)
    for _ in range(2000):  # corrupted bytes of a valid map
        data = bytearray(whole)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cases.append(bytes(data))
    assert decode_pairs(whole) == PAIRS
    for data in cases:
        assert decode_pairs(data) == decode_pairs_py(data), data
