"""W3C Trace Context headers (https://www.w3.org/TR/trace-context/): ``traceparent``
and ``tracestate``, parsed from a client and made for backends."""

from __future__ import annotations

import re

from edgegw.types import Headers

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
TRACE_HEADERS = frozenset({TRACEPARENT, TRACESTATE})
# §3.2.2: version, trace-id, parent-id, trace-flags; lowercase hex only. A version above 00
# may append fields after a "-" (§4.3), which a 00 parser ignores.
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# §3.3.1.5: a tracestate of up to 512 characters must be propagated; a longer one may be
# dropped. Values are printable ASCII (§3.3.1.3); the ingress already refused CR/LF/NUL.
MAX_TRACESTATE = 512
SAMPLED = 0x01  # trace-flags bit (§3.2.2.5)


class Incoming:
    """A valid ``traceparent`` from the client, with its ``tracestate``."""

    __slots__ = ("flags", "parent_id", "trace_id", "tracestate")

    def __init__(self, trace_id: int, parent_id: int, flags: int, tracestate: bytes) -> None:
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.flags = flags
        self.tracestate = tracestate


def parse_traceparent(value: bytes) -> tuple[int, int, int] | None:
    """(trace id, parent id, flags), or None for a value to ignore (§3.2.2, §4.3)."""
    m = _TRACEPARENT.fullmatch(value.strip(b" \t"))
    if m is None:
        return None
    version, trace, parent, flags, rest = m.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return None  # ff is never valid; version 00 has exactly four fields
    trace_id, parent_id = int(trace, 16), int(parent, 16)
    if trace_id == 0 or parent_id == 0:  # §3.2.2.3, §3.2.2.4: all zeroes is invalid
        return None
    return trace_id, parent_id, int(flags, 16)


def incoming(headers: Headers) -> Incoming | None:
    """The client's trace context: None without exactly one valid ``traceparent``.
    Several ``tracestate`` fields are one list (§3.3.1, RFC 9110 §5.3)."""
    parent: bytes | None = None
    states: list[bytes] = []
    for name, value in headers:
        if name == TRACEPARENT:
            if parent is not None:
                return None  # §3.2: more than one traceparent is invalid
            parent = value
        elif name == TRACESTATE:
            states.append(value)
    if parent is None:
        return None
    parsed = parse_traceparent(parent)
    if parsed is None:
        return None  # §3.3: no valid traceparent, so its tracestate is dropped too
    state = b",".join(s.strip() for s in states)
    if len(state) > MAX_TRACESTATE:
        state = b""
    return Incoming(*parsed, state)


def traceparent(trace_id: int, span_id: int, sampled: bool) -> bytes:
    return b"00-%032x-%016x-%s" % (trace_id, span_id, b"01" if sampled else b"00")


def inject(headers: Headers, value: bytes, tracestate: bytes) -> Headers:
    """A copy of ``headers`` carrying this ``traceparent`` (and ``tracestate``) only."""
    out = [(n, v) for n, v in headers if n not in TRACE_HEADERS]
    out.append((TRACEPARENT, value))
    if tracestate:
        out.append((TRACESTATE, tracestate))
    return out
