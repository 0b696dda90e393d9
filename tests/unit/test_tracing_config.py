"""The ``tracing:`` section and the W3C trace context parser (edgegw/tracing/w3c.py)."""

from __future__ import annotations

import textwrap

import pytest

from edgegw.config import parse_config, redacted
from edgegw.tracing import w3c
from tests.unit.test_config import problems

BASE = "version: 1\n"


def test_absent_means_off_and_defaults() -> None:
    assert parse_config(BASE, env={}).tracing is None
    config = parse_config(BASE + "tracing: {otlp_endpoint: 'http://127.0.0.1:4318'}\n", env={})
    tracing = config.tracing
    assert tracing is not None
    assert tracing.otlp_endpoint == "http://127.0.0.1:4318/v1/traces"  # the traces path added
    assert (tracing.sample_ratio, tracing.service_name, tracing.trust_incoming) == (
        1.0,
        "edgegw",
        True,
    )
    kept = parse_config(BASE + "tracing: {otlp_endpoint: 'https://c:4318/custom'}\n", env={})
    assert kept.tracing is not None and kept.tracing.otlp_endpoint == "https://c:4318/custom"


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "tracing: {sample_ratio: 0.5}",
            "tracing.otlp_endpoint: missing required key 'otlp_endpoint'",
        ),
        (
            "tracing: {otlp_endpoint: 'grpc://c:4317'}",
            "tracing.otlp_endpoint: invalid otlp_endpoint",
        ),
        (
            "tracing: {otlp_endpoint: 'http://c', sample_ratio: 2}",
            "tracing.sample_ratio: sample_ratio must be",
        ),
        (
            "tracing: {otlp_endpoint: 'http://c', sample_ratio: true}",
            "tracing.sample_ratio: sample_ratio must be",
        ),
        (
            "tracing: {otlp_endpoint: 'http://c', sample_rate: 1}",
            "unknown key 'sample_rate' (did you mean 'sample_ratio'?)",
        ),
        (
            "tracing: {otlp_endpoint: 'http://c', headers: {'bad name': x}}",
            "invalid header name 'bad name'",
        ),
        ("tracing: {otlp_endpoint: 'http://c', service_name: ''}", "service_name may not be empty"),
        ("tracing: {otlp_endpoint: 'http://c', trust_incoming: 1}", "expected true or false"),
    ],
)
def test_problems(snippet: str, expected: str) -> None:
    [problem] = problems(BASE + snippet + "\n")
    assert expected in problem


def test_collector_headers_are_redacted() -> None:
    text = BASE + textwrap.dedent("""\
        tracing:
          otlp_endpoint: http://127.0.0.1:4318
          headers: {Authorization: "Bearer s3cret"}
        """)  # fmt: skip
    config = parse_config(text, env={})
    assert config.tracing is not None and config.tracing.headers == {
        "authorization": "Bearer s3cret"
    }
    assert "s3cret" not in str(redacted(config))


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
         (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 1)),
        (b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-future",  # §4.3: a later version
         (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 0)),
        (b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra", None),  # 00: 4 fields
        (b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),
        (b"00-00000000000000000000000000000000-b7ad6b7169203331-01", None),
        (b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", None),
        (b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", None),  # upper case
        (b"00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01", None),  # short
        (b"", None),
    ],
)  # fmt: skip
def test_traceparent(value: bytes, parsed: tuple[int, int, int] | None) -> None:
    assert w3c.parse_traceparent(value) == parsed


def test_incoming_needs_exactly_one_traceparent_and_bounds_tracestate() -> None:
    tp = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert w3c.incoming([(b"traceparent", tp), (b"traceparent", tp)]) is None
    came = w3c.incoming([(b"traceparent", tp), (b"tracestate", b"a=1"), (b"tracestate", b"b=2")])
    assert came is not None and came.tracestate == b"a=1,b=2"
    huge = w3c.incoming([(b"traceparent", tp), (b"tracestate", b"a=" + b"x" * 600)])
    assert huge is not None and huge.tracestate == b""
    headers = w3c.inject([(b"traceparent", tp), (b"x", b"y")], w3c.traceparent(1, 2, False), b"")
    assert headers == [
        (b"x", b"y"),
        (b"traceparent", b"00-" + b"0" * 31 + b"1-" + b"0" * 15 + b"2-00"),
    ]
