"""The front-door keys of gateway.yaml: every mistake is an error naming its YAML path
and line, with "did you mean" where a name is close."""

from __future__ import annotations

import json

import pytest

from edgegw.config import parse_config, redacted
from edgegw.errors import ConfigError

HEAD = "version: 1\nbackends: {app: 'http://127.0.0.1:9'}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(HEAD + text, env={})
    return [str(p) for p in info.value.problems]


def route(extra: str) -> str:
    return f"routes:\n  - name: app\n    match: {{prefix: /app}}\n    backend: app\n{extra}"


def test_a_bad_rewrite_regex_names_its_path_and_line() -> None:
    found = problems(route('    rewrite: {path_regex: "^/app/(.*$", to: "/v2/\\\\1"}\n'))
    assert len(found) == 1
    assert found[0].startswith("routes[0].rewrite.path_regex: invalid regular expression")
    assert "(line 7)" in found[0]


def test_a_rewrite_group_the_regex_lacks_and_rewrite_beside_strip_prefix() -> None:
    found = problems(route('    rewrite: {path_regex: "^/app/(.*)$", to: "/v2/\\\\2"}\n'))
    assert found and "routes[0].rewrite.to: invalid replacement" in found[0]
    assert "invalid group reference 2" in found[0]
    found = problems(
        route('    strip_prefix: true\n    rewrite: {path_regex: "^/app", to: "/v2"}\n')
    )
    assert found == ["routes[0].rewrite: rewrite cannot be combined with strip_prefix (line 8)"]
    found = problems(route('    rewrite: {path_regex: "^/app", to: "v2"}\n'))
    assert found == ["routes[0].rewrite.to: must start with '/', got 'v2' (line 7)"]


def test_cors_mistakes() -> None:
    found = problems(
        route(
            "    cors:\n"
            '      allow_origins: ["*", "https://app.example.com/", "regex:^https://(.*$"]\n'
            "      allow_credentials: true\n"
            "      allow_methods: [GETT]\n"
            "      allow_headers: ['*']\n"
            "      max_age: 10 minutes\n"
            "      alow_headers: [x]\n"
        )
    )
    assert found == [
        "routes[0].cors.allow_origins[0]: '*' cannot be used with allow_credentials: true "
        "(list the origins, or a regex: entry) (line 8)",
        "routes[0].cors.allow_origins[1]: invalid origin 'https://app.example.com/': "
        "expected scheme://host[:port] (no path, not even a trailing '/') (line 8)",
        found[2],
        "routes[0].cors.allow_methods[0]: unknown method 'GETT' (did you mean 'GET'?) (line 10)",
        "routes[0].cors.allow_headers[0]: '*' means nothing with allow_credentials: true; "
        "list the names (line 11)",
        "routes[0].cors.max_age: invalid duration '10 minutes' (examples: 2s, 500ms, 1m) (line 12)",
        "routes[0].cors.alow_headers: unknown key 'alow_headers' "
        "(did you mean 'allow_headers'?) (line 13)",
    ]
    assert found[2].startswith("routes[0].cors.allow_origins[2]: invalid regular expression")
    assert problems(route("    cors: {allow_methods: [GET]}\n")) == [
        "routes[0].cors.allow_origins: missing required key 'allow_origins' (line 7)"
    ]


def test_header_rule_mistakes() -> None:
    found = problems(
        "headers:\n"
        "  request:\n"
        "    set: {connection: close, x-a: '{claims.tenant}', x-b: '{geo.city}', x-c: on}\n"
        "    remove: [host, 'bad name']\n"
        "  response:\n"
        "    add: {content-length: '1', x-d: '{header.x-y'}\n"
        "    sett: {}\n"
    )
    assert found == [
        "headers.request.set.connection: header 'connection' cannot be edited: it is "
        "hop-by-hop (RFC 9110 §7.6.1) (line 5)",
        "headers.request.set.x-a: unknown template reference '{claims.tenant}' "
        "(did you mean 'claim'?); e.g. {header.x-user} (line 5)",
        "headers.request.set.x-b: unknown template reference '{geo.city}' "
        "(did you mean 'geo.country'?) (line 5)",
        "headers.request.set.x-c: expected a string (quote values such as 'on', 'true' or "
        "'off') (line 5)",
        "headers.request.remove[0]: header 'host' cannot be edited: it is set by the "
        "gateway (line 6)",
        "headers.request.remove[1]: invalid header name 'bad name' (line 6)",
        "headers.response.add.content-length: header 'content-length' cannot be edited: it "
        "is set by the gateway (line 8)",
        "headers.response.add.x-d: unmatched '{' in '{header.x-y' (write {{ for a literal) "
        "(line 8)",
        "headers.response.sett: unknown key 'sett' (did you mean 'set'?) (line 9)",
    ]


def test_security_headers_forms() -> None:
    assert parse_config(HEAD, env={}).security_headers is None  # absent: off
    assert parse_config(HEAD + "security_headers: off\n", env={}).security_headers is None
    default = parse_config(HEAD + "security_headers: default\n", env={}).security_headers
    assert default is not None
    assert dict(default.values)["x-frame-options"] == "DENY"
    assert default.tls_only == {"strict-transport-security"}
    custom = parse_config(
        HEAD + "security_headers:\n"
        "  content-security-policy: \"default-src 'self'\"\n"
        "  x-frame-options: SAMEORIGIN\n"
        "  referrer-policy: off\n"
        "  strict-transport-security: max-age=600\n",
        env={},
    ).security_headers
    assert custom is not None
    assert dict(custom.values) == {
        "x-content-type-options": "nosniff",
        "x-frame-options": "SAMEORIGIN",
        "strict-transport-security": "max-age=600",
        "content-security-policy": "default-src 'self'",
    }
    assert custom.tls_only == frozenset()  # set on purpose: sent without TLS too
    assert problems("security_headers: {content-security-polcy: x}\n") == [
        "security_headers.content-security-polcy: unknown security header "
        "'content-security-polcy' (did you mean 'content-security-policy'?) (line 3)"
    ]
    assert problems("security_headers: strict\n") == [
        "security_headers: expected off, default or a mapping of headers, got 'strict' (line 3)"
    ]


def test_admin_config_shows_the_front_door_keys() -> None:
    config = parse_config(
        HEAD
        + "security_headers: default\n"
        + route(
            '    cors: {allow_origins: ["regex:^https://a\\\\.test$", "https://B.test"]}\n'
            '    rewrite: {path_regex: "^/app/(.*)$", to: "/v2/\\\\1"}\n'
        ),
        env={},
    )
    doc = json.loads(json.dumps(redacted(config)))  # /admin/config serves this
    route_doc = doc["routes"][0]
    assert route_doc["cors"]["origins"] == ["https://b.test"]
    assert route_doc["cors"]["origin_patterns"] == ["^https://a\\.test$"]
    assert route_doc["rewrite"] == {"pattern": "^/app/(.*)$", "to": "/v2/\\1"}
    assert doc["security_headers"]["tls_only"] == ["strict-transport-security"]
