"""The ``backends:`` contract of issue 17: endpoints, lb, hash_on, health_check, outlier,
retry, limits, tls; every mistake named with its YAML path and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgegw.config import parse_config, redacted
from edgegw.errors import ConfigError
from edgegw.model import BackendLimits, Endpoint, HealthCheck, Outlier, Retry

SNIPPET = """\
version: 1
backends:
  users:
    endpoints: ["http://users-1.internal:8080", "http://users-2.internal:8080",
                {url: "http://users-3.internal:8080", weight: 2}]
    lb: round_robin
    timeout: 2s
    health_check: {path: /healthz, interval: 5s, timeout: 1s, healthy: 2, unhealthy: 3,
                   expect: [200-399]}
    outlier: {consecutive_errors: 5, interval: 10s, base_ejection: 30s, max_ejected: 50%}
    retry: {attempts: 2, on: [connect-failure, reset, 502, 503, 504], per_try_timeout: 500ms,
            budget: 20%, backoff: {base: 25ms, max: 250ms}}
    limits: {max_connections: 1024, max_pending: 256, max_requests: 1024}
  sticky:
    endpoints: ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    lb: hash
    hash_on: header:X-User-Id
  plain: http://127.0.0.1:9001
"""


def problems(text: str, source: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source=source, env={})
    return [str(p) for p in info.value.problems]


def test_the_issue_snippet_reads_as_written() -> None:
    users = parse_config(SNIPPET).backends["users"]
    assert users.endpoints == (
        Endpoint("http://users-1.internal:8080"),
        Endpoint("http://users-2.internal:8080"),
        Endpoint("http://users-3.internal:8080", 2),
    )
    assert (users.lb, users.timeout, users.url) == ("round_robin", 2.0, users.endpoints[0].url)
    assert users.health_check == HealthCheck("/healthz", 5.0, 1.0, 2, 3, ((200, 399),))
    assert users.outlier == Outlier(5, 10.0, 30.0, 0.5)
    assert users.retry == Retry(
        attempts=2,
        on=("connect-failure", "reset"),
        statuses=(502, 503, 504),
        per_try_timeout=0.5,
        budget=0.2,
        backoff_base=0.025,
        backoff_max=0.25,
    )
    assert users.limits == BackendLimits(1024, 256, 1024)
    assert users.balanced


def test_hash_on_and_plain_url() -> None:
    config = parse_config(SNIPPET)
    assert config.backends["sticky"].hash_on == "header:x-user-id"  # header names: lower case
    plain = config.backends["plain"]
    assert (plain.url, plain.endpoints, plain.balanced) == ("http://127.0.0.1:9001", (), False)
    redacted(config)  # the admin's effective config stays JSON-able


def test_one_endpoint_is_a_plain_url() -> None:
    config = parse_config('version: 1\nbackends: {a: {endpoints: ["http://127.0.0.1:1"]}}\n')
    backend = config.backends["a"]
    assert (backend.url, backend.balanced) == ("http://127.0.0.1:1", False)


def test_lb_hash_defaults_to_the_client_address() -> None:
    text = 'version: 1\nbackends: {a: {endpoints: ["http://h:1", "http://h:2"], lb: hash}}\n'
    assert parse_config(text).backends["a"].hash_on == "ip"


BAD = """\
version: 1
backends:
  a:
    endpoints: ["http://a:1", {url: "http://b:1", wieght: 2}, {url: "ftp://x"}, "http://a:1"]
    lb: roundrobin
  b:
    url: http://b:1
    endpoints: ["http://c:1"]
    hash_on: header:x
    health_check: {path: healthz, expect: [200-999, nope]}
    outlier: {max_ejected: 150%, consecutive_errors: 0}
    retry: {attempts: 20, on: [connect-failur, 404], backoff: {base: 1s, max: 10ms}}
    limits: {max_request: 3}
  c:
    url: http://c:1
    tls: {ca: nope.pem, cert: c.pem}
  d:
    endpoints: ["http://d:1/v1", "http://e:1/v2"]
    lb: hash
    hash_on: body
"""


def test_every_mistake_is_named_with_path_and_line(tmp_path: Path) -> None:
    found = problems(BAD, tmp_path / "gateway.yaml")
    expected = [
        "backends.a.endpoints[1].wieght: unknown key 'wieght' (did you mean 'weight'?) (line 4)",
        "backends.a.endpoints[2].url: invalid backend URL 'ftp://x' (expected http://host:port)"
        " (line 4)",
        "backends.a.endpoints[3]: duplicate endpoint http://a:1 (line 4)",
        "backends.a.lb: unknown value 'roundrobin' (did you mean 'round_robin'?) (line 5)",
        "backends.b: a backend has url or endpoints, not both (line 7)",
        "backends.b.hash_on: hash_on needs lb: hash (line 9)",
        "backends.b.health_check.expect[0]: invalid status range '200-999' (statuses are 100 to"
        " 599) (line 10)",
        "backends.b.health_check.expect[1]: invalid status or range 'nope' (examples: 200,"
        " 200-399) (line 10)",
        "backends.b.health_check.path: must start with '/', got 'healthz' (line 10)",
        "backends.b.outlier.max_ejected: percentage must be between 0% and 100%, got '150%'"
        " (line 11)",
        "backends.b.outlier.consecutive_errors: must be at least 1, got 0 (line 11)",
        "backends.b.retry.attempts: attempts must be at most 10, got 20 (line 12)",
        "backends.b.retry.on[0]: unknown value 'connect-failur' (did you mean"
        " 'connect-failure'?) (line 12)",
        "backends.b.retry.on[1]: a retried status must be 500 to 599, got 404 (line 12)",
        "backends.b.retry.backoff: backoff max must not be below base (line 12)",
        "backends.b.limits.max_request: unknown key 'max_request' (did you mean"
        " 'max_requests'?) (line 13)",
        "backends.c.tls: tls cert and key go together (a client certificate for mTLS) (line 16)",
        "backends.c.tls: tls needs https:// endpoints (not http://c:1) (line 16)",
        f"backends.c.tls.ca: file not found: {tmp_path / 'nope.pem'} (line 16)",
        f"backends.c.tls.cert: file not found: {tmp_path / 'c.pem'} (line 16)",
        "backends.d.endpoints: endpoints of one backend must share their base path (line 18)",
        "backends.d.hash_on: invalid hash_on 'body' (expected header:<name>, cookie:<name> or"
        " ip) (line 20)",
    ]
    assert sorted(found) == sorted(expected)


def test_tls_files_resolve_against_the_config(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    text = (
        "version: 1\nbackends:\n  u:\n    url: https://127.0.0.1:1\n"
        "    tls: {verify: true, ca: ca.pem, sni: users.internal, cert: c.pem, key: k.pem}\n"
    )
    tls = parse_config(text, source=tmp_path / "gateway.yaml").backends["u"].tls
    assert tls is not None
    files = (tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem")
    assert (tls.ca, tls.cert, tls.key) == files
    assert (tls.verify, tls.sni) == (True, "users.internal")
