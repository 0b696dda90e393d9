"""``access_log:`` of gateway.yaml → ``AccessLogConfig``.

``true``/``false`` (the older form, still read) or a mapping::

    access_log: {path: stdout, format: json, fields: [time, route, status], sample_2xx: 0.1}
"""

from __future__ import annotations

from typing import Any

from edgegw.config.yamlnodes import Node, Reader, as_bool, as_str, did_you_mean, one_of
from edgegw.model import AccessLogConfig

#: Every field a JSON line may hold (edgegw/observe/access_log.py formats them).
FIELDS = (
    "time",
    "route",
    "method",
    "path",
    "protocol",
    "status",
    "duration_ms",
    "backend",
    "bytes_in",
    "bytes_out",
    "client",
    "user_agent",
    "referer",
    "request_id",
    "trace_id",
)
#: A JSON line's fields when ``fields`` is not given: the ones of edgegw's earlier access
#: log, then the start time and the trace id.
DEFAULT_FIELDS = tuple(f for f in FIELDS if f not in ("protocol", "user_agent", "referer"))
KEYS = ("enabled", "path", "format", "fields", "sample_2xx")


def _ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"expected a number from 0 to 1, got {value!r}")
    return float(value)


def _path(value: Any) -> str:
    text = as_str(value)
    if not text:
        raise ValueError("expected stdout or a file path, got an empty string")
    return text


def read_access_log(r: Reader, node: Node | None) -> AccessLogConfig:
    if node is None:
        return AccessLogConfig()
    if isinstance(node.value, bool):
        return AccessLogConfig(enabled=node.value)
    m = r.mapping(node, KEYS)
    if m is None:
        return AccessLogConfig()
    fields: list[str] = []
    if "fields" in m:
        for item in r.sequence(m["fields"]) or []:
            name = r.convert(item, as_str, "")
            if name and name not in FIELDS:
                r.problem(item, f"unknown access log field '{name}'{did_you_mean(name, FIELDS)}")
            elif name in fields:
                r.problem(item, f"access log field '{name}' listed twice")
            elif name:
                fields.append(name)
        if not fields:
            r.problem(m["fields"], "an access log needs at least one field")
    log_format = r.convert(m.get("format"), one_of("json", "combined"), "json")
    if fields and log_format != "json":
        r.problem(m["fields"], f"fields apply to format: json, not {log_format}")
    return AccessLogConfig(
        enabled=r.convert(m.get("enabled"), as_bool, True),
        path=r.convert(m.get("path"), _path, "stdout"),
        format=log_format,
        fields=tuple(fields) or DEFAULT_FIELDS,
        sample_2xx=r.convert(m.get("sample_2xx"), _ratio, 1.0),
    )
