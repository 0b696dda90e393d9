"""Access log line formats: ``json`` (the fields chosen, in order) and ``combined`` (the
Apache/nginx combined log format), each a function of one record (edgegw/observe/access_log.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _quote  # the C encoder's string quoting
from typing import Any

from edgegw.config.access_log import DEFAULT_FIELDS
from edgegw.headers import get

Format = Callable[[Any], str]
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _Clock:
    """Second-resolution timestamps, formatted once per second."""

    def __init__(self, render: Callable[[time.struct_time], str]) -> None:
        self.render = render
        self.second = -1
        self.text = ""

    def __call__(self, when: float) -> str:
        second = int(when)
        if second != self.second:
            self.second, self.text = second, self.render(time.gmtime(second))
        return self.text


def _header(scope: Any, name: bytes) -> str:
    value = get(scope.get("headers") or [], name)
    return value.decode("latin-1") if value is not None else ""


def _protocol(scope: Any) -> str:
    return "HTTP/" + str(scope.get("http_version", "1.1"))


def _json_getters() -> dict[str, Callable[[Any], str]]:
    iso = _Clock(lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", t))
    null = "null"

    def when(r: Any) -> str:
        return f'"{iso(r[0])}.{int(r[0] * 1000) % 1000:03d}Z"'

    return {
        "time": when,
        "route": lambda r: _quote(r[1]),
        "method": lambda r: _quote(r[2]),
        "path": lambda r: _quote(r[3]),
        "protocol": lambda r: _quote(_protocol(r[12])),
        "status": lambda r: str(r[4]),
        "duration_ms": lambda r: f"{r[5] * 1000:.3f}",
        "backend": lambda r: null if r[6] is None else _quote(r[6]),
        "bytes_in": lambda r: str(r[7]),
        "bytes_out": lambda r: str(r[8]),
        "client": lambda r: _quote(r[11]),
        "user_agent": lambda r: _quote(_header(r[12], b"user-agent")),
        "referer": lambda r: _quote(_header(r[12], b"referer")),
        "request_id": lambda r: _quote(r[9].decode("latin-1")),
        "trace_id": lambda r: _quote(r[10]),
    }


def json_format(fields: tuple[str, ...]) -> Format:
    if fields == DEFAULT_FIELDS:
        return _default_json()
    getters = [(f'"{name}":', _json_getters()[name]) for name in fields]

    def line(record: Any) -> str:
        return "{" + ",".join([key + get(record) for key, get in getters]) + "}\n"

    return line


def _default_json() -> Format:
    """The default fields in one f-string: a third of the generic loop's time."""
    iso = _Clock(lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", t))
    q = _quote

    def line(r: Any) -> str:
        when, backend = r[0], r[6]
        return (
            f'{{"time":"{iso(when)}.{int(when * 1000) % 1000:03d}Z","route":{q(r[1])},'
            f'"method":{q(r[2])},"path":{q(r[3])},"status":{r[4]},'
            f'"duration_ms":{r[5] * 1000:.3f},'
            f'"backend":{"null" if backend is None else q(backend)},'
            f'"bytes_in":{r[7]},"bytes_out":{r[8]},"client":{q(r[11])},'
            f'"request_id":{q(r[9].decode("latin-1"))},"trace_id":{q(r[10])}}}\n'
        )

    return line


_ESCAPES = {c: f"\\x{c:02X}" for c in (*range(0x20), 0x22, 0x5C, 0x7F)}


def _plain(text: str) -> str:
    """A value inside a combined line's quotes, escaped as nginx does (``\\xHH``)."""
    return text.translate(_ESCAPES)


def combined_format() -> Format:
    stamp = _Clock(
        lambda t: (
            f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
        )
    )

    def line(r: Any) -> str:
        scope = r[12]
        referer = _plain(_header(scope, b"referer")) or "-"
        agent = _plain(_header(scope, b"user-agent")) or "-"
        request = f"{r[2]} {_plain(r[3])} {_protocol(scope)}"
        return (
            f'{r[11] or "-"} - - [{stamp(r[0])}] "{request}" {r[4]} {r[8]} "{referer}" "{agent}"\n'
        )

    return line


#: Fields read from the request's ASGI scope when the line is written: a record keeps the
#: scope (and its header list) alive until then only when one of these is logged.
SCOPE_FIELDS = frozenset({"protocol", "user_agent", "referer"})


def needs_scope(kind: str, fields: tuple[str, ...]) -> bool:
    return kind == "combined" or not SCOPE_FIELDS.isdisjoint(fields)


def formatter(kind: str, fields: tuple[str, ...]) -> Format:
    return combined_format() if kind == "combined" else json_format(fields)
