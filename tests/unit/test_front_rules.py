"""Header rules, templates, security headers and rewrites (edgegw/front) in-process,
with real filters (a WAT guest, jwt_auth, geo) and a real loopback backend."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt

from edgegw.app import GatewayApp, wasm_chains
from edgegw.config import parse_config
from edgegw.front.rules import Security
from tests.conftest import LoopbackBackend
from tests.wat import proxy_wat, write_wasm

MakeBackend = Callable[..., LoopbackBackend]
Client = Callable[..., httpx.AsyncClient]
REPO = Path(__file__).resolve().parents[2]
SECRET = "rules-test-secret-" + "k" * 48

# On request headers: adds x-from-filter: f1 and x-filter-secret: s, and copies the
# x-rule it sees into x-filter-saw. On response headers: adds x-filter-resp: f1.
_SETTER = proxy_wat(
    """
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
""",
    """
  (data (i32.const 1024) "x-from-filter")
  (data (i32.const 1040) "f1")
  (data (i32.const 1056) "x-filter-secret")
  (data (i32.const 1072) "s")
  (data (i32.const 1088) "x-rule")
  (data (i32.const 1104) "x-filter-saw")
  (data (i32.const 1120) "x-filter-resp")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 0) (i32.const 1024) (i32.const 13) (i32.const 1040) (i32.const 2)))
    (drop (call $add (i32.const 0) (i32.const 1056) (i32.const 15) (i32.const 1072) (i32.const 1)))
    (if (i32.eqz (call $get (i32.const 0) (i32.const 1088) (i32.const 6)
                            (i32.const 2000) (i32.const 2004)))
      (then (drop (call $add (i32.const 0) (i32.const 1104) (i32.const 12)
                             (i32.load (i32.const 2000)) (i32.load (i32.const 2004))))))
    i32.const 0)
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 1120) (i32.const 13) (i32.const 1040) (i32.const 2)))
    i32.const 0)
""",
)


def seen(doc: dict[str, object]) -> dict[str, list[str]]:
    """The backend's received headers, name -> values."""
    out: dict[str, list[str]] = {}
    for name, value in doc["headers"]:  # type: ignore[attr-defined]
        out.setdefault(name, []).append(value)
    return out


async def test_request_rules_run_after_the_filters_and_response_rules_after_theirs(
    tmp_path: Path, backend_factory: MakeBackend, asgi_client: Client
) -> None:
    backend = backend_factory(extra_headers=[("server", "aiohttp"), ("x-powered-by", "php")])
    wasm = write_wasm(tmp_path, "setter", _SETTER)
    text = f"""
version: 1
backends: {{app: "{backend.url}"}}
filters: {{setter: {{wasm: {wasm}}}}}
headers:
  request: {{set: {{x-env: prod}}, remove: [x-debug]}}
  response: {{remove: [server, x-powered-by], set: {{x-env: global}}}}
routes:
  - name: app
    match: {{prefix: /app}}
    filters: [setter]
    backend: app
    headers:
      request:
        set: {{x-rule: rule, x-copy: "{{header.x-from-filter}}", x-env: route}}
        add: {{x-trace: "a", x-copy: "{{header.x-from-filter}}-again"}}
        remove: [x-filter-secret]
      response: {{remove: [x-filter-resp], add: {{x-env: route}}}}
  - {{name: other, match: {{prefix: /other}}, filters: [setter], backend: app}}
"""
    app = GatewayApp(parse_config(text, env={}), chains_factory=wasm_chains)
    await app.startup()
    client = asgi_client(app)
    r = await client.get("/app/x", headers={"x-rule": "client", "x-debug": "1", "x-trace": "c"})
    got = seen(r.json())
    assert got["x-filter-saw"] == ["client"]  # the filter ran before the rule set x-rule
    assert got["x-rule"] == ["rule"]
    assert got["x-copy"] == ["f1", "f1-again"]  # a template reads what the filter set
    assert got["x-from-filter"] == ["f1"]
    assert "x-filter-secret" not in got  # a rule removes what the filter added
    assert "x-debug" not in got
    assert got["x-env"] == ["route"]  # the route's set comes after the global one
    assert got["x-trace"] == ["c", "a"]  # add keeps what was there
    assert "x-filter-resp" not in r.headers  # removed after the response filter set it
    assert "server" not in r.headers and "x-powered-by" not in r.headers
    assert r.headers.get_list("x-env") == ["global", "route"]
    # A route without its own rules: the global ones only; the filter's header stays.
    r = await client.get("/other/x", headers={"x-debug": "1"})
    got = seen(r.json())
    assert got["x-env"] == ["prod"] and "x-debug" not in got
    assert got["x-filter-secret"] == ["s"]
    assert r.headers["x-filter-resp"] == "f1" and r.headers["x-env"] == "global"
    # Global response rules reach the gateway's own replies too.
    r = await client.get("/nowhere")
    assert r.status_code == 404 and r.headers["x-env"] == "global"


async def test_templates_claim_geo_param_and_no_injection(
    backend_factory: MakeBackend, asgi_client: Client
) -> None:
    backend = backend_factory()
    jwt_config = json.dumps(
        {"providers": [{"issuer": "t", "audiences": ["api"], "secret": SECRET}]}
    )
    geo_config = json.dumps({"trusted_headers": ["cf-ipcountry"]})
    text = f"""
version: 1
backends: {{app: "{backend.url}"}}
filters:
  jwt: {{wasm: {REPO / "filters/dist/jwt_auth.wasm"}, config: '{jwt_config}'}}
  geo: {{wasm: {REPO / "filters/dist/geo.wasm"}, config: '{geo_config}'}}
routes:
  - name: app
    match: {{prefix: /app}}
    filters: [jwt, geo]
    backend: app
    headers:
      request:
        set:
          x-tenant: "{{claim.tenant}}"
          x-where: "{{geo.country}}/{{param.lang}}"
          x-admin: "{{claim.admin}}"
          x-braces: "{{{{literal}}}}"
      response: {{set: {{x-echo-lang: "{{param.lang}}", x-tenant: "{{header.x-tenant}}"}}}}
"""
    app = GatewayApp(parse_config(text, env={}), chains_factory=wasm_chains)
    await app.startup()
    client = asgi_client(app)
    claims = {"iss": "t", "aud": "api", "sub": "u1", "tenant": "acme", "admin": True}
    auth = {"authorization": "Bearer " + jwt.encode(claims, SECRET, "HS256")}
    r = await client.get(
        "/app/x?lang=de+CH&lang=fr", headers={**auth, "cf-ipcountry": "DE", "x-tenant": "evil"}
    )
    got = seen(r.json())
    assert got["x-tenant"] == ["acme"]  # the verified claim, not the client's value
    assert got["x-where"] == ["DE/de CH"]  # the first value, form-decoded
    assert got["x-admin"] == ["true"]
    assert got["x-braces"] == ["{literal}"]
    assert r.headers["x-echo-lang"] == "de CH" and r.headers["x-tenant"] == "acme"
    # No tenant claim: the client's own x-tenant must not survive a rule meant to set it.
    claims.pop("tenant")
    auth = {"authorization": "Bearer " + jwt.encode(claims, SECRET, "HS256")}
    r = await client.get("/app/x?lang=%0d%0ax-injected:%201", headers={**auth, "x-tenant": "evil"})
    got = seen(r.json())
    assert "x-tenant" not in got
    assert "x-where" not in got and "x-injected" not in got  # CR LF never reach a header
    assert "x-echo-lang" not in r.headers and "x-injected" not in r.headers


async def test_security_headers_default_and_mapping(
    backend_factory: MakeBackend, asgi_client: Client
) -> None:
    backend = backend_factory(extra_headers=[("x-frame-options", "SAMEORIGIN")])
    head = f"version: 1\nbackends: {{app: '{backend.url}'}}\n"
    routes = "routes:\n  - {match: {prefix: /}, backend: app}\n"
    client = asgi_client(GatewayApp(parse_config(head + "security_headers: default\n" + routes)))
    r = await client.get("/x")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert r.headers.get_list("x-frame-options") == ["SAMEORIGIN"]  # the backend's own stays
    assert "strict-transport-security" not in r.headers  # no TLS on this listener
    r = await client.get("/x", headers={"host": "bad host"})
    assert r.status_code == 400 and r.headers["x-frame-options"] == "DENY"  # gateway replies
    custom = (
        "security_headers:\n"
        "  content-security-policy: \"default-src 'none'\"\n"
        "  referrer-policy: off\n"
        "  strict-transport-security: max-age=600\n"
        "headers: {response: {set: {x-frame-options: DENY}}}\n"
    )
    client = asgi_client(GatewayApp(parse_config(head + custom + routes)))
    r = await client.get("/x")
    assert r.headers["content-security-policy"] == "default-src 'none'"
    assert "referrer-policy" not in r.headers
    assert r.headers["strict-transport-security"] == "max-age=600"
    assert r.headers.get_list("x-frame-options") == ["DENY"]  # a rule overrides the backend


async def test_rewrite_with_groups_keeps_the_query(
    backend_factory: MakeBackend, asgi_client: Client
) -> None:
    backend = backend_factory()
    text = f"""
version: 1
backends: {{app: "{backend.url}"}}
routes:
  - match: {{prefix: /app}}
    backend: app
    rewrite: {{path_regex: "^/app/(.*)$", to: "/v2/\\\\1"}}
  - match: {{prefix: /m}}
    backend: app
    rewrite: {{path_regex: "^/m(/.*)?$", to: "/x/\\\\1"}}
  - match: {{prefix: /u}}
    backend: app
    rewrite: {{path_regex: "/(?P<id>[0-9]+)", to: "/id-\\\\g<id>"}}
"""
    client = asgi_client(GatewayApp(parse_config(text, env={})))
    assert (await client.get("/app/a/b?q=1&r=%2F")).json()["raw_path"] == "/v2/a/b?q=1&r=%2F"
    assert (await client.get("/app")).json()["raw_path"] == "/app"  # no match: unchanged
    # "/x/" + "/y" is "/x//y": normalized again, a backend never gets "//".
    assert (await client.get("/m/y")).json()["raw_path"] == "/x/y"
    assert (await client.get("/u/12/34")).json()["raw_path"] == "/u/id-12/id-34"  # every match


def test_hsts_goes_out_only_when_the_listener_is_tls() -> None:
    config = parse_config("version: 1\nsecurity_headers: default\n", env={})
    assert config.security_headers is not None
    assert config.tls is None  # a cleartext listener: no HSTS
    plain = Security(config.security_headers, tls=False).apply([])
    tls = Security(config.security_headers, tls=True).apply([])
    assert b"strict-transport-security" not in dict(plain)
    assert dict(tls)[b"strict-transport-security"] == b"max-age=63072000"
    assert Security(config.security_headers, tls=True).apply(
        [(b"strict-transport-security", b"max-age=1")]
    ) == [(b"strict-transport-security", b"max-age=1")] + [
        (n, v) for n, v in tls if n != b"strict-transport-security"
    ]
