"""gateway.yaml's listener keys: ``tls`` (cert, key, min_version), ``http2``,
``routes[].websocket`` and ``limits.websocket_idle_timeout``; every mistake with its path."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import pytest

from edgegw.config import parse_config
from edgegw.errors import ConfigError
from edgegw.listener_tls import CertWatcher, server_context
from edgegw.model import ListenerTLS
from tests.tlsca import make_ca, write_pair

BACKEND = "backends: {b: {url: 'http://127.0.0.1:9'}}\n"


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return write_pair(tmp_path / "tls", make_ca("test CA"))


def _problems(text: str, source: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(text, source=source)
    return [str(p) for p in err.value.problems]


def test_tls_and_http2(pair: tuple[Path, Path], tmp_path: Path) -> None:
    text = (
        f"version: 1\ntls: {{cert: tls/tls.crt, key: {pair[1]}, min_version: '1.3'}}\nhttp2: true\n"
    )
    config = parse_config(text, source=tmp_path / "gateway.yaml")
    assert config.tls == ListenerTLS(pair[0], pair[1], "1.3")  # relative to the config's folder
    assert config.http2 is True
    default = parse_config("version: 1\n")
    assert default.tls is None and default.http2 is False
    # An unquoted 1.2 is a YAML float: read as written.
    text = f"version: 1\ntls: {{cert: {pair[0]}, key: {pair[1]}, min_version: 1.2}}\n"
    assert parse_config(text).tls == ListenerTLS(pair[0], pair[1], "1.2")


def test_tls_mistakes(pair: tuple[Path, Path], tmp_path: Path) -> None:
    source = tmp_path / "gateway.yaml"
    cert, key = pair
    assert _problems(f"version: 1\ntls: {{cert: {cert}}}\n", source) == [
        "tls.key: missing required key 'key' (line 2)"
    ]
    assert _problems(
        f"version: 1\ntls: {{cert: {cert}, key: {key}, min_versoin: '1.2'}}\n", source
    ) == ["tls.min_versoin: unknown key 'min_versoin' (did you mean 'min_version'?) (line 2)"]
    assert _problems(
        f"version: 1\ntls: {{cert: {cert}, key: {key}, min_version: '1.1'}}\n", source
    ) == ['tls.min_version: expected "1.2" or "1.3", got \'1.1\' (line 2)']
    assert _problems(f"version: 1\ntls: {{cert: nope.crt, key: {key}}}\n", source) == [
        f"tls.cert: file not found: {tmp_path / 'nope.crt'} (line 2)"
    ]
    # A certificate with another certificate's key: refused by `edgegw check`, not at serve.
    other_cert, _ = write_pair(tmp_path / "other", make_ca("other CA"))
    [problem] = _problems(f"version: 1\ntls: {{cert: {other_cert}, key: {key}}}\n", source)
    assert problem.startswith("tls: cannot load the certificate and key:")
    assert _problems("version: 1\nhttp2: yes please\n", source) == [
        "http2: expected true or false, got a string (line 2)"
    ]


def test_websocket_route_keys(tmp_path: Path) -> None:
    source = tmp_path / "gateway.yaml"
    text = (
        "version: 1\n" + BACKEND + "limits: {websocket_idle_timeout: 90s}\n"
        "routes:\n  - {match: {prefix: /ws}, backend: b, websocket: true}\n"
        "  - {match: {prefix: /}, backend: b}\n"
    )
    config = parse_config(text, source=source)
    assert [r.websocket for r in config.routes] == [True, False]
    assert config.limits.websocket_idle_timeout == 90.0
    bad = (
        "version: 1\n" + BACKEND + "routes:\n"
        "  - {match: {prefix: /a}, websocket: true, aggregate: {backends: [{backend: b, path: /x}]}}\n"
        "  - {match: {prefix: /b}, backend: b, web_socket: true}\n"
    )
    assert _problems(bad, source) == [
        "routes[0].websocket: websocket needs a single backend (not split or aggregate) (line 4)",
        "routes[1].web_socket: unknown key 'web_socket' (did you mean 'websocket'?) (line 5)",
    ]


def test_server_context_and_the_watcher(pair: tuple[Path, Path], tmp_path: Path) -> None:
    tls = ListenerTLS(*pair, min_version="1.3")
    context = server_context(tls, ["h2", "http/1.1"])
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.options & ssl.OP_NO_COMPRESSION
    calls: list[int] = []
    watcher = CertWatcher(tls, lambda: calls.append(1))
    assert not watcher.check()  # nothing changed
    # A renewal half-written (a new certificate, the old key) is not served...
    new_cert, new_key = write_pair(tmp_path / "new", make_ca("test CA"))
    pair[0].write_bytes(new_cert.read_bytes())
    assert not watcher.check() and calls == []
    # ... until its key is there too; then once.
    pair[1].write_bytes(new_key.read_bytes())
    assert watcher.check() and calls == [1]
    assert not watcher.check() and calls == [1]


def test_a_kubernetes_secret_update_is_seen(tmp_path: Path) -> None:
    """A Secret volume: tls.crt -> ..data/tls.crt, ..data -> ..<stamp>/; kubelet writes a
    new ..<stamp>/ folder and renames a new ..data link over the old one."""
    ca = make_ca("test CA")
    volume = tmp_path / "secret"
    write_pair(volume / "..2026_01", ca)
    (volume / "..data").symlink_to("..2026_01")
    for name in ("tls.crt", "tls.key"):
        (volume / name).symlink_to(f"..data/{name}")
    renewed = threading.Event()
    watcher = CertWatcher(ListenerTLS(volume / "tls.crt", volume / "tls.key"), renewed.set)
    watcher.start()
    try:
        write_pair(volume / "..2026_02", ca)
        (volume / "..data_tmp").symlink_to("..2026_02")
        (volume / "..data_tmp").replace(volume / "..data")
        assert renewed.wait(20)
    finally:
        watcher.close()
