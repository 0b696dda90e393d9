"""gateway.yaml parsing: every error class with its path and line, substitution, units."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from edgegw.config import load_config, parse_config, redacted
from edgegw.errors import ConfigError, ConfigProblem
from edgegw.model import Address
from tests.conftest import REPO

BASE = """\
version: 1
backends:
  users: {url: "http://127.0.0.1:9001"}
routes:
  - name: users
    match: {prefix: /users}
    backend: users
"""


@pytest.fixture
def wasm_dir(tmp_path: Path) -> Path:
    """A folder holding a gateway.yaml's neighbour ``f.wasm``."""
    (tmp_path / "f.wasm").write_bytes(b"\0asm\1\0\0\0")
    return tmp_path.resolve()


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), env=env or {})
    return [str(p) for p in info.value.problems]


def test_example_config_is_valid() -> None:
    config = load_config(REPO / "gateway.yaml.example", env={})
    assert config.listen == Address("127.0.0.1", 8080)
    assert [r.name for r in config.routes] == [
        "users",
        "orders",
        "recommendations",
        "shop",
        "account",
        "profile",
    ]
    assert config.admin.token is None  # ${EDGEGW_ADMIN_TOKEN:-} with the variable unset
    profile = config.routes[-1]
    assert profile.aggregate is not None
    assert profile.aggregate.backends[1].required is False
    assert profile.aggregate.backends[1].timeout == pytest.approx(0.3)


def test_paths_escaped_slashes() -> None:
    assert parse_config(BASE, env={}).paths.escaped_slashes == "reject_request"
    keep = parse_config(BASE + "paths: {escaped_slashes: keep_escaped}\n", env={})
    assert keep.paths.escaped_slashes == "keep_escaped"


def test_defaults() -> None:
    config = parse_config(BASE, env={})
    assert config.server == "granian" and config.workers == 1
    assert config.store.url == "memory://" and config.store.on_error is None
    assert config.backends["users"].timeout == 30.0
    assert config.admin.listen is None
    assert config.routes[0].match.prefix == "/users"
    assert config.sched_batch is True
    assert parse_config(BASE + "sched_batch: false\n", env={}).sched_batch is False


def test_connection_limits() -> None:
    limits = parse_config(BASE, env={}).limits
    # Defaults hold thousands of idle or silent clients per worker (docs/security.md).
    assert (limits.max_connections, limits.header_timeout, limits.idle_timeout) == (10_000, 10, 60)
    text = BASE + "limits: {max_connections: 20000, header_timeout: 5s, idle_timeout: 2m}\n"
    limits = parse_config(text, env={}).limits
    assert (limits.max_connections, limits.header_timeout, limits.idle_timeout) == (20_000, 5, 120)
    assert problems(BASE + "limits: {max_connections: 0}\n") == [
        "limits.max_connections: must be at least 1, got 0 (line 8)"
    ]


def test_units(wasm_dir: Path) -> None:
    config = parse_config(
        """
        version: 1
        backends:
          a: {url: "http://h:1/", timeout: 500ms, connect_timeout: 2s}
          b: {url: "http://h:2", timeout: 1.5m}
          c: "http://h:3"
        filters:
          f: {wasm: f.wasm, limits: {memory: 32MiB, cpu: 10ms}}
        limits: {max_request_body: 10MB, max_header_bytes: 16KiB}
        routes: []
        """.replace("\n        ", "\n"),
        source=wasm_dir / "gateway.yaml",
        env={},
    )
    assert config.backends["a"].timeout == pytest.approx(0.5)
    assert config.backends["a"].url == "http://h:1"
    assert config.backends["a"].connect_timeout == 2.0
    assert config.backends["b"].timeout == pytest.approx(90.0)
    assert config.backends["c"].url == "http://h:3"
    assert config.filters["f"].limits.memory == 32 * 1024 * 1024
    assert config.filters["f"].limits.cpu == pytest.approx(0.01)
    assert config.limits.max_request_body == 10_000_000
    assert config.limits.max_header_bytes == 16 * 1024


def test_env_substitution() -> None:
    env = {"PORT": "8181", "TOKEN": "s3cret", "EMPTY": ""}
    config = parse_config(
        """
version: 1
listen: "127.0.0.1:${PORT}"
workers: ${WORKERS:-3}
admin: {listen: "127.0.0.1:9901", token: "${TOKEN}"}
store: {url: "${STORE_URL:-memory://}", prefix: "${EMPTY:-fallback}"}
backends:
  users: {url: "http://127.0.0.1:${PORT}"}
routes:
  - {name: r, match: {prefix: "/price$$"}, backend: users}
""",
        env=env,
    )
    assert config.listen == Address("127.0.0.1", 8181)
    assert config.workers == 3  # a plain ${..} scalar is typed after substitution
    assert config.admin.token == "s3cret"
    assert config.store.url == "memory://"
    assert config.store.prefix == "fallback"  # ${VAR:-default} also covers an empty value
    assert config.routes[0].match.prefix == "/price$"


def test_unset_variable_names_path_and_line() -> None:
    assert problems(BASE + "admin: {listen: ':9901', token: '${ADMIN_TOKEN}'}\n") == [
        "admin.token: environment variable ADMIN_TOKEN is not set (line 8)"
    ]


def test_all_problems_reported_at_once_with_lines() -> None:
    found = problems(
        """\
version: 1
backends:
  users: {url: "http://127.0.0.1:9001", timeot: 2s}
routes:
  - name: users
    match: {prefix: /users}
    backend: users
  - name: orders
    match: {prefix: /orders}
    backend: ordrs
"""
    )
    assert found == [
        "backends.users.timeot: unknown key 'timeot' (did you mean 'timeout'?) (line 3)",
        "routes[1].backend: unknown backend 'ordrs' (line 10)",
    ]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "version: 1\nlisten: nope\n",
            "listen: invalid address 'nope' (expected host:port) (line 2)",
        ),
        ("version: 1\nworkers: 0\n", "workers: must be at least 1, got 0 (line 2)"),
        (
            "version: 1\nserver: gunicorn\n",
            "server: expected one of granian, hypercorn, got 'gunicorn' (line 2)",
        ),
        ("version: 2\n", "version: unsupported version 2 (this edgegw reads version 1) (line 1)"),
        ("listen: ':1'\n", "version: missing required key 'version' (line 1)"),
        ("version: 1\nbogus: 1\n", "bogus: unknown key 'bogus' (line 2)"),
        (
            "version: 1\nbackends: {a: {url: 'ftp://x'}}\n",
            "backends.a.url: invalid backend URL 'ftp://x' (expected http://host:port) (line 2)",
        ),
        (
            "version: 1\nbackends: {a: {url: 'http://x', timeout: soon}}\n",
            "backends.a.timeout: invalid duration 'soon' (examples: 2s, 500ms, 1m) (line 2)",
        ),
        (
            "version: 1\nbackends: {a: {url: 'http://x', timeout: -1}}\n",
            "backends.a.timeout: duration must be positive, got -1 (line 2)",
        ),
        (
            "version: 1\nbackends: {a: {timeout: 1s}}\n",
            "backends.a.url: missing required key 'url' (line 2)",
        ),
        (
            "version: 1\nlimits: {max_request_body: huge}\n",
            "limits.max_request_body: invalid size 'huge' (examples: 32MiB, 512KiB, 10MB) (line 2)",
        ),
        (
            "version: 1\nstore: {url: 'mongo://x'}\n",
            "store.url: unsupported store URL scheme 'mongo' (memory:// or redis://) (line 2)",
        ),
        (
            "version: 1\nstore: {flags: {beta: {rollout: 150}}}\n",
            "store.flags.beta: invalid flag 'beta': rollout must be a number from 0 to 100 (line 2)",
        ),
        (
            "version: 1\npaths: {escaped_slashes: unescape}\n",
            "paths.escaped_slashes: expected one of reject_request, keep_escaped, got 'unescape' (line 2)",
        ),
        (
            "version: 1\nstore: {url: 'redis://127.0.0.1:1', lease: {shares: 10%}}\n",
            "store.lease.shares: unknown key 'shares' (did you mean 'share'?) (line 2)",
        ),
        (
            "version: 1\nstore: {url: 'redis://127.0.0.1:1', lease: {share: 0%}}\n",
            "store.lease.share: share must be above 0% (line 2)",
        ),
        (
            "version: 1\nstore: {lease: {}}\n",
            "store.lease: store.lease needs a shared store (redis://...), not memory:// (line 2)",
        ),
        (
            "version: 1\nstore: {on_error: explode}\n",
            "store.on_error: expected one of fail_open, fail_closed, local, got 'explode' (line 2)",
        ),
        (
            "version: 1\ntrusted_proxies: [10.0.0.0/33]\n",
            "trusted_proxies[0]: invalid CIDR '10.0.0.0/33': '10.0.0.0/33' does not appear to be an IPv4 or IPv6 network (line 2)",
        ),
        (
            "version: 1\nfilters: {f: {wasm: missing.wasm}}\n",
            "filters.f.wasm: wasm file not found: {tmp}/missing.wasm (line 2)",
        ),
        (
            "version: 1\nfilters: {f: {wasm: f.wasm, on_error: shrug}}\n",
            "filters.f.on_error: expected one of fail_closed, fail_open, reload, got 'shrug' (line 2)",
        ),
        ("version: 1\nbackground: [nope]\n", "background[0]: unknown filter 'nope' (line 2)"),
        ("version: 1\nroutes: {a: 1}\n", "routes: expected a list, got a mapping (line 2)"),
        (
            "version: 1\nbackends: {a: 'http://x'}\nroutes:\n  - {name: r, match: {prefix: x}, backend: a}\n",
            "routes[0].match.prefix: must start with '/', got 'x' (line 4)",
        ),
        (
            "version: 1\nbackends: {a: 'http://x'}\nroutes:\n  - {name: r, match: {prefix: /, path: /x}, backend: a}\n",
            "routes[0].match: match needs exactly one of prefix, path (line 4)",
        ),
        (
            "version: 1\nbackends: {a: 'http://x'}\nroutes:\n  - {name: r, match: {path: '/x/{id}/{id}'}, backend: a}\n",
            "routes[0].match.path: duplicate path parameter '{id}' (line 4)",
        ),
        (
            "version: 1\nbackends: {a: 'http://x'}\nroutes:\n  - {name: r, match: {path: '/x/{1d}'}, backend: a}\n",
            "routes[0].match.path: invalid path parameter '{1d}' (line 4)",
        ),
        (
            "version: 1\nbackends: {a: 'http://x'}\nroutes:\n  - {name: r, match: {prefix: /}}\n",
            "routes[0]: a route needs exactly one of backend, split, aggregate (found: none) (line 4)",
        ),
        (
            "version: 1\nbackends: {a: 'http://x'}\nroutes:\n  - {name: r, match: {prefix: /}, backend: a, filters: [jwt]}\n",
            "routes[0].filters[0]: unknown filter 'jwt' (line 4)",
        ),
        (
            "version: 1\nbackends: {a: 'http://x'}\nroutes:\n  - {name: r, match: {prefix: /}, split: {header: v, backends: {A: b}, default: a}}\n",
            "routes[0].split.backends.A: unknown backend 'b' (line 4)",
        ),
        (
            "version: 1\nbackends: {a: 'http://x'}\nroutes:\n  - {name: r, match: {path: '/p/{id}'}, aggregate: {backends: [{backend: a, path: '/u/{uid}'}]}}\n",
            "routes[0].aggregate.backends[0].path: unknown template parameter '{uid}' (did you mean 'id'?) (line 4)",
        ),
        (
            "version: 1\nbackends: {a: 'http://x'}\nroutes:\n  - {name: r, match: {prefix: /}, backend: a}\n  - {name: r, match: {prefix: /}, backend: a}\n",
            "routes[1].name: duplicate route name 'r' (line 5)",
        ),
        (
            "version: 1\nbackends: {a: 'http://x'}\nroutes:\n  - {name: r, match: {prefix: /, methods: ['GE T']}, backend: a}\n",
            "routes[0].match.methods[0]: unknown method 'GE T' (did you mean 'GET'?) (line 4)",
        ),
        (
            "version: 1\nbackends:\n  a: 'http://x'\n  a: 'http://y'\n",
            "backends.a: duplicate key (line 4)",
        ),
    ],
)
def test_error_classes(snippet: str, expected: str, wasm_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(snippet, source=wasm_dir / "gateway.yaml", env={})
    assert expected.replace("{tmp}", str(wasm_dir)) in [str(p) for p in info.value.problems]


GUESSES = """\
version: 1
backends:
  recommendations: "http://127.0.0.1:9001"
  users: "http://127.0.0.1:9002"
filters:
  ratelimit: {wasm: f.wasm}
  geo: {wasm: f.wasm}
background: [geo, ratelimt]
routes:
  - name: recs
    match: {prefix: /recs, methods: [GETT, post, FROB]}
    filters: [ratelimit, ratelimt]
    backend: recomendations
  - name: split
    match: {prefix: /s}
    split: {header: v, backends: {A: user}, default: recomendation}
  - name: profile
    match: {path: "/p/{user_id}"}
    aggregate:
      backends:
        - {backend: usrs, path: "/u/{userid}", method: PUTT}
"""


def test_unknown_names_and_methods_suggest_the_closest_known_one(wasm_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(GUESSES, source=wasm_dir / "gateway.yaml", env={})
    assert [str(p) for p in info.value.problems] == [
        "background[1]: unknown filter 'ratelimt' (did you mean 'ratelimit'?) (line 8)",
        "routes[0].match.methods[0]: unknown method 'GETT' (did you mean 'GET'?) (line 11)",
        "routes[0].match.methods[2]: unknown method 'FROB' (expected one of GET, HEAD, POST,"
        " PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH) (line 11)",
        "routes[0].filters[1]: unknown filter 'ratelimt' (did you mean 'ratelimit'?) (line 12)",
        "routes[0].backend: unknown backend 'recomendations'"
        " (did you mean 'recommendations'?) (line 13)",
        "routes[1].split.backends.A: unknown backend 'user' (did you mean 'users'?) (line 16)",
        "routes[1].split.default: unknown backend 'recomendation'"
        " (did you mean 'recommendations'?) (line 16)",
        "routes[2].aggregate.backends[0].backend: unknown backend 'usrs'"
        " (did you mean 'users'?) (line 21)",
        "routes[2].aggregate.backends[0].method: unknown method 'PUTT'"
        " (did you mean 'PUT'?) (line 21)",
        "routes[2].aggregate.backends[0].path: unknown template parameter '{userid}'"
        " (did you mean 'user_id'?) (line 21)",
    ]


def test_methods_known_case_insensitive_and_deduplicated() -> None:
    config = parse_config(
        BASE.replace("{prefix: /users}", "{prefix: /users, methods: [get, PATCH, GET, HEAD]}"),
        env={},
    )
    assert config.routes[0].match.methods == ("GET", "PATCH", "HEAD")


def yaml_slip(text: str) -> ConfigProblem:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    (problem,) = info.value.problems
    return problem


def test_yaml_syntax_error_has_line() -> None:
    # The input ends inside the list: the place to show is where the '[' opened.
    problem = yaml_slip("version: 1\nroutes:\n  - name: [unclosed\n")
    assert problem.message.startswith("invalid YAML")
    assert (problem.line, problem.column) == (3, 11)
    assert problem.excerpt == "  - name: [unclosed"
    assert problem.hint == "this '[' has no matching ']', or an item lacks its ','"


def test_yaml_indentation_slip_shows_line_column_caret_and_hint() -> None:
    problem = yaml_slip("version: 1\nbackends:\n  users: http://x\n   orders: http://y\n")
    assert problem == ConfigProblem(
        "",
        "invalid YAML: mapping values are not allowed here",
        4,
        10,
        "   orders: http://y",
        "check the indentation of this line and the one above, or quote a value holding ': '",
    )
    assert problem.render("gateway.yaml").splitlines() == [
        "gateway.yaml:4:10: invalid YAML: mapping values are not allowed here",
        "       orders: http://y",
        "             ^",
        "    hint: check the indentation of this line and the one above,"
        " or quote a value holding ': '",
    ]
    assert str(problem) == (
        "invalid YAML: mapping values are not allowed here (line 4, column 10): check the"
        " indentation of this line and the one above, or quote a value holding ': '"
    )


@pytest.mark.parametrize(
    ("text", "line", "column", "hint"),
    [
        # a key indented less than its siblings (PyYAML: ParserError, block collection)
        (
            "version: 1\nroutes:\n  - name: a\n   match: {prefix: /}\n",
            4,
            4,
            "check the indentation of this line and the one above",
        ),
        # a key indented less than its siblings (PyYAML: ParserError, block mapping)
        (
            "version: 1\nbackends:\n  a: 1\n b: 2\n",
            4,
            2,
            "check the indentation of this line and the one above",
        ),
        ("version: 1\nbackends:\n\tusers: http://x\n", 3, 1, "YAML does not allow tabs"),
        ("version: 1\nbackends:\n  users:\n  \turl: http://x\n", 4, 3, "YAML does not allow"),
        ('version: 1\nlisten: "127.0.0.1:80\n', 2, 9, "this quote is never closed"),
        ("version: 1\nbackends\n  a: 1\n", 3, 4, "a key needs a ':' after it"),
        ("a: *x\n", 1, 4, ""),  # no hint beats a wrong one
    ],
)
def test_yaml_slips_are_classified(text: str, line: int, column: int, hint: str) -> None:
    problem = yaml_slip(text)
    assert (problem.line, problem.column) == (line, column)
    assert problem.hint.startswith(hint) and bool(problem.hint) == bool(hint)
    assert problem.excerpt == text.splitlines()[line - 1]


def test_yaml_slip_line_with_tabs_keeps_caret_aligned() -> None:
    rendered = yaml_slip("version: 1\nbackends:\n  users:\n  \turl: x\n").render("g.yaml")
    assert rendered.splitlines()[1:3] == ["      \turl: x", "      ^"]


def test_error_names_source_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("version: 1\nworkers: many\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems == [ConfigProblem("workers", "expected an integer, got a string", 2)]
    assert str(path) in str(info.value)


def test_filter_config_json_or_raw_string(wasm_dir: Path) -> None:
    config = parse_config(
        """
version: 1
filters:
  j: {wasm: f.wasm, config: {issuer: "${ISS}", n: 1}, vm_config: raw-text}
  k: {wasm: f.wasm}
background: [k]
""",
        source=wasm_dir / "gateway.yaml",
        env={"ISS": "https://id.example"},
    )
    assert config.filters["j"].config == b'{"issuer":"https://id.example","n":1}'
    assert config.filters["j"].vm_config == b"raw-text"
    assert config.filters["j"].wasm == (wasm_dir / "f.wasm").resolve()
    assert config.filters["k"].background is True
    assert config.background == ("k",)


def test_config_is_immutable() -> None:
    config = parse_config(BASE, env={})
    with pytest.raises(AttributeError):
        config.workers = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.backends["x"] = config.backends["users"]  # type: ignore[index]


def test_redacted_hides_secrets(wasm_dir: Path) -> None:
    config = parse_config(
        """
version: 1
admin: {listen: "127.0.0.1:9901", token: t0ken}
store: {url: "redis://:hunter2@127.0.0.1:6379/0"}
filters:
  jwt: {wasm: f.wasm, config: {providers: [{issuer: me, secret: k3y}], client_secret: x}}
""",
        source=wasm_dir / "gateway.yaml",
        env={},
    )
    doc = redacted(config)
    text = json.dumps(doc)
    for secret in ("t0ken", "hunter2", "k3y"):
        assert secret not in text
    assert doc["store"]["url"] == "redis://:***@127.0.0.1:6379/0"
    assert doc["filters"]["jwt"]["config"]["providers"][0] == {"issuer": "me", "secret": "***"}


def test_shared_data_bounds_default_and_parse() -> None:
    assert parse_config("version: 1\n").shared_data.max_bytes == 64 * 1024 * 1024
    config = parse_config("version: 1\nshared_data: {max_bytes: 8MiB, max_keys: 500}\n")
    assert (config.shared_data.max_bytes, config.shared_data.max_keys) == (8 << 20, 500)
    assert problems("version: 1\nshared_data: {max_bytes: 100, max_key: 5}\n") == [
        "shared_data.max_bytes: max_bytes must be between 1KiB and 1TiB (line 2)",
        "shared_data.max_key: unknown key 'max_key' (did you mean 'max_keys'?) (line 2)",
    ]
