"""The ``tracing:`` section of gateway.yaml (part of ``edgegw.config``).

docs/configuration.md is the reference, docs/operations.md ("Tracing") the semantics.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from edgegw.config.yamlnodes import Node, Reader, as_bool, as_str
from edgegw.model import TracingConfig, frozen_map

TRACING_KEYS = ("otlp_endpoint", "sample_ratio", "service_name", "headers", "trust_incoming")
#: The OTLP/HTTP traces path (OTLP spec, "OTLP/HTTP Request"): added to an endpoint
#: given without a path, as OTEL_EXPORTER_OTLP_ENDPOINT is completed by the SDKs.
TRACES_PATH = "/v1/traces"
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.6.2 token


def read_tracing(r: Reader, node: Node | None) -> TracingConfig | None:
    """None (tracing off) when the section is absent."""
    if node is None or (m := r.mapping(node, TRACING_KEYS, ("otlp_endpoint",))) is None:
        return None
    endpoint = r.convert(m.get("otlp_endpoint"), _endpoint, "")
    headers: dict[str, str] = {}
    if "headers" in m and (h := r.mapping(m["headers"])) is not None:
        for name, value in h.items():
            if not _TOKEN.match(name):
                r.problem(value, f"invalid header name '{name}'")
            text = r.convert(value, as_str, "")
            if any(c in text for c in "\r\n\0"):
                r.problem(value, "a header value may not hold CR, LF or NUL")
            headers[name.lower()] = text
    return TracingConfig(
        otlp_endpoint=endpoint,
        sample_ratio=r.convert(m.get("sample_ratio"), _ratio, 1.0),
        service_name=r.convert(m.get("service_name"), _service, "edgegw"),
        headers=frozen_map(headers),
        trust_incoming=r.convert(m.get("trust_incoming"), as_bool, True),
    )


def _endpoint(value: Any) -> str:
    text = as_str(value)
    url = urlsplit(text)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"invalid otlp_endpoint {text!r} (expected http(s)://host:port[/path])")
    if url.path in ("", "/"):
        return text.rstrip("/") + TRACES_PATH
    return text


def _ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"sample_ratio must be a number from 0 to 1, got {value!r}")
    return float(value)


def _service(value: Any) -> str:
    text = as_str(value)
    if not text:
        raise ValueError("service_name may not be empty")
    return text
