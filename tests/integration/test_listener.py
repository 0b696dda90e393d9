"""The listener (issue #18): TLS with a CA made here, HTTP/2 (ALPN h2 and h2c prior
knowledge), WebSocket routes through a JWT filter, a certificate renewed on disk; real
clients (httpx, curl, websockets) against real gateways, under granian and hypercorn."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import Server, ServerConnection, serve

from edgegw.demo import DEMO_JWT_SECRET, demo_token
from tests.conftest import REPO, GatewayProcess, LoopbackBackend, free_port
from tests.integration.test_reload import wait_generation
from tests.tlsca import make_ca, pem, write_pair

SERVERS = ["granian", "hypercorn"]
JWT = {
    "wasm": str(REPO / "filters" / "dist" / "jwt_auth.wasm"),
    "config": {
        "providers": [{"issuer": "edgegw-demo", "audiences": ["demo"], "secret": DEMO_JWT_SECRET}],
        "forward_claims": {"sub": "x-user-id"},
    },
}


def _pick(_ws: ServerConnection, offered: Sequence[str]) -> str | None:
    return next((p for p in offered if p in ("chat", "v2")), None)


class EchoServer:
    """A WebSocket echo backend (the ``websockets`` library's own server) on 127.0.0.1;
    ``requests`` records each handshake's path and headers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sizes: list[int] = []  # of each message received
        self.server: Server = serve(self._echo, "127.0.0.1", 0, select_subprotocol=_pick)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _echo(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.requests.append(
            (ws.request.path, {k.lower(): v for k, v in ws.request.headers.raw_items()})
        )
        for message in ws:
            self.sizes.append(len(message))
            if message == "close-me":
                ws.close(4001, "asked to")
                return
            ws.send(message)

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(10)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def ca(tmp_path: Path) -> tuple[Any, Path]:
    """A CA made here, and its certificate's file (what clients trust)."""
    authority = make_ca("edgegw test CA")
    path = tmp_path / "ca.pem"
    path.write_bytes(pem(authority[0]))
    return authority, path


def _gateway(
    run_gateway: Callable[..., GatewayProcess],
    server: str,
    backend_url: str,
    *,
    tls: dict[str, str] | None = None,
    http2: bool = False,
    ws_url: str | None = None,
    extra: dict[str, Any] | None = None,
) -> GatewayProcess:
    config: dict[str, Any] = {
        "server": server,
        "http2": http2,
        "backends": {"api": {"url": backend_url}},
        "routes": [{"name": "api", "match": {"prefix": "/api"}, "backend": "api"}],
        **(extra or {}),
    }
    if tls is not None:
        config["tls"] = tls
    if ws_url is not None:
        config["backends"]["chat"] = {"url": ws_url}
        config["backends"]["gone"] = {"url": f"http://127.0.0.1:{free_port()}"}  # closed
        config["filters"] = {"jwt": JWT}
        config["routes"][:0] = [
            {"name": "chat", "match": {"prefix": "/chat"}, "backend": "chat", "websocket": True,
             "filters": ["jwt"]},
            {"name": "open", "match": {"prefix": "/open"}, "backend": "chat", "websocket": True,
             "strip_prefix": True},
            {"name": "gone", "match": {"prefix": "/gone"}, "backend": "gone", "websocket": True},
        ]  # fmt: skip
    return run_gateway(config)


def _client_context(ca_file: Path, **kwargs: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    for name, value in kwargs.items():
        setattr(context, name, value)
    return context


def _https(gw: GatewayProcess) -> str:
    return f"https://localhost:{gw.port}"


@pytest.mark.parametrize("server", SERVERS)
def test_https_and_http2_with_a_ca_made_here(
    server: str, tmp_path: Path, ca: tuple[Any, Path],
    run_gateway: Callable[..., GatewayProcess], backend_factory: Callable[..., LoopbackBackend],
) -> None:  # fmt: skip
    cert, key = write_pair(tmp_path / "tls", ca[0])
    backend = backend_factory()
    gw = _gateway(run_gateway, server, backend.url, tls={"cert": str(cert), "key": str(key)},
                  http2=True)  # fmt: skip
    verify = _client_context(ca[1])
    with httpx.Client(verify=verify, timeout=20) as client:
        r = client.get(_https(gw) + "/api/one")
    assert r.status_code == 200 and r.http_version == "HTTP/1.1"
    assert dict(map(tuple, r.json()["headers"]))["x-forwarded-proto"] == "https"  # type: ignore[arg-type]
    with httpx.Client(verify=verify, http2=True, timeout=20) as client:
        r = client.get(_https(gw) + "/api/two")
    assert r.status_code == 200 and r.http_version == "HTTP/2"
    assert r.json()["path"] == "/api/two"
    # A client that does not trust the CA is refused by its own verification.
    with httpx.Client(timeout=20) as client, pytest.raises(httpx.ConnectError):
        client.get(_https(gw) + "/api/one")
    if shutil.which("curl"):
        out = subprocess.run(
            ["curl", "-sS", "--http2", "--cacert", str(ca[1]), "-o", "/dev/null",
             "-w", "%{http_version} %{http_code}", _https(gw) + "/api/curl"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        assert out == "2 200"


@pytest.mark.parametrize("server", SERVERS)
def test_h2c_prior_knowledge_without_tls(
    server: str, run_gateway: Callable[..., GatewayProcess],
    backend_factory: Callable[..., LoopbackBackend],
) -> None:  # fmt: skip
    backend = backend_factory()
    gw = _gateway(run_gateway, server, backend.url, http2=True)
    with httpx.Client(http1=False, http2=True, timeout=20) as client:
        r = client.get(gw.url + "/api/h2c")
    assert r.status_code == 200 and r.http_version == "HTTP/2"
    with httpx.Client(timeout=20) as client:  # HTTP/1.1 still served on the same port
        assert client.get(gw.url + "/api/h1").http_version == "HTTP/1.1"


def test_http2_off_granian_speaks_only_http1(
    run_gateway: Callable[..., GatewayProcess], backend_factory: Callable[..., LoopbackBackend],
) -> None:  # fmt: skip
    backend = backend_factory()
    gw = _gateway(run_gateway, "granian", backend.url)
    h2c = httpx.Client(http1=False, http2=True, timeout=20)
    with h2c, pytest.raises(httpx.HTTPError):  # hypercorn cannot refuse it (docs)
        h2c.get(gw.url + "/api/h2c")


@pytest.mark.parametrize("server", SERVERS)
def test_min_version_1_3_refuses_a_tls_1_2_client(
    server: str, tmp_path: Path, ca: tuple[Any, Path],
    run_gateway: Callable[..., GatewayProcess], backend_factory: Callable[..., LoopbackBackend],
) -> None:  # fmt: skip
    cert, key = write_pair(tmp_path / "tls", ca[0])
    backend = backend_factory()
    tls = {"cert": str(cert), "key": str(key), "min_version": "1.3"}
    gw = _gateway(run_gateway, server, backend.url, tls=tls)
    old = _client_context(ca[1], maximum_version=ssl.TLSVersion.TLSv1_2)
    with httpx.Client(verify=old, timeout=20) as client, pytest.raises(httpx.ConnectError):
        client.get(_https(gw) + "/api/x")
    with httpx.Client(verify=_client_context(ca[1]), timeout=20) as client:
        assert client.get(_https(gw) + "/api/x").status_code == 200


def _served_serial(port: int, ca_file: Path) -> int:
    """The serial number of the certificate a new connection gets."""
    import socket

    from cryptography import x509

    context = _client_context(ca_file)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.mark.parametrize("server", SERVERS)
def test_a_certificate_swapped_on_disk_is_served_to_the_next_connection(
    server: str, tmp_path: Path, ca: tuple[Any, Path], echo: EchoServer,
    run_gateway: Callable[..., GatewayProcess], backend_factory: Callable[..., LoopbackBackend],
) -> None:  # fmt: skip
    cert, key = write_pair(tmp_path / "tls", ca[0])
    backend = backend_factory()
    gw = _gateway(run_gateway, server, backend.url, tls={"cert": str(cert), "key": str(key)},
                  ws_url=f"http://127.0.0.1:{echo.port}")  # fmt: skip
    first = _served_serial(gw.port, ca[1])
    # A WebSocket session open across the renewal: it must keep working.
    url = f"wss://localhost:{gw.port}/open/x"
    with connect(url, ssl=_client_context(ca[1]), open_timeout=20) as ws:
        ws.send("before")
        assert ws.recv(timeout=20) == "before"
        # A renewal as certbot or cert-manager makes it: new files renamed over the old.
        new_cert, new_key = write_pair(tmp_path / "renewed", ca[0])
        new_key.replace(key)
        new_cert.replace(cert)
        deadline = time.monotonic() + 60
        while (serial := _served_serial(gw.port, ca[1])) == first and time.monotonic() < deadline:
            time.sleep(0.2)
        assert serial != first, gw.output()
        ws.send("after")
        assert ws.recv(timeout=20) == "after"
    with httpx.Client(verify=_client_context(ca[1]), timeout=20) as client:
        assert client.get(_https(gw) + "/api/x").status_code == 200


def _ws(gw: GatewayProcess, path: str, **kwargs: Any) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{gw.port}{path}", open_timeout=20, **kwargs)


@pytest.mark.parametrize("server", SERVERS)
def test_websocket_echo_through_a_jwt_filter(
    server: str, echo: EchoServer, run_gateway: Callable[..., GatewayProcess],
    backend_factory: Callable[..., LoopbackBackend],
) -> None:  # fmt: skip
    backend = backend_factory()
    gw = _gateway(run_gateway, server, backend.url, ws_url=f"http://127.0.0.1:{echo.port}")
    with pytest.raises(InvalidStatus) as refused:
        _ws(gw, "/chat/room")
    # Both servers have the ASGI denial-response extension: the filter's own reply.
    assert refused.value.response.status_code == 401
    assert refused.value.response.body is not None
    assert echo.requests == []  # refused before any backend connection
    with pytest.raises(InvalidStatus) as not_ws:  # a route without websocket: true
        _ws(gw, "/api/x")
    assert not_ws.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as unreachable:  # the backend's port is closed
        _ws(gw, "/gone")
    assert unreachable.value.response.status_code == 502
    token = demo_token("42")
    # A client's try at a filter's header and at the gateway's own: as on HTTP routes.
    headers = {"authorization": f"Bearer {token}", "x-user-id": "1", "x-edgegw-variant": "b"}
    with _ws(gw, "/chat/room?x=1", additional_headers=headers, subprotocols=["v2"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "v2"
        ws.send("hello")
        assert ws.recv(timeout=20) == "hello"
        ws.send(b"\x00\xffbinary")
        assert ws.recv(timeout=20) == b"\x00\xffbinary"
        ws.send("close-me")  # the backend closes: the client gets its code
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=20)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    path, seen = echo.requests[-1]
    assert path == "/chat/room?x=1"
    assert seen["x-user-id"] == "42"
    assert "x-edgegw-variant" not in seen
    assert "sec-websocket-key" in seen  # the gateway's own handshake with the backend
    assert seen["x-forwarded-for"] == "127.0.0.1"
    # Counted once the relay ended, which may be just after the client saw the close.
    wanted = 'edgegw_websocket_sessions_total{end="backend",route="chat"} 1.0'
    deadline = time.monotonic() + 20
    while wanted not in (metrics := httpx.get(gw.admin_url + "/metrics", timeout=20).text):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert wanted in metrics, metrics
    assert (
        'edgegw_websocket_messages_total{direction="client_to_backend",route="chat"} 3.0' in metrics
    )


@pytest.mark.parametrize("server", SERVERS)
def test_an_idle_websocket_is_closed(
    server: str, echo: EchoServer, run_gateway: Callable[..., GatewayProcess],
    backend_factory: Callable[..., LoopbackBackend],
) -> None:  # fmt: skip
    backend = backend_factory()
    gw = _gateway(run_gateway, server, backend.url, ws_url=f"http://127.0.0.1:{echo.port}",
                  extra={"limits": {"websocket_idle_timeout": "1s"}})  # fmt: skip
    with _ws(gw, "/open/idle") as ws:
        ws.send("one")
        assert ws.recv(timeout=20) == "one"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert echo.requests[-1][0] == "/idle"  # strip_prefix applies to the upgrade's path


def test_a_reload_adds_a_websocket_route(
    echo: EchoServer, run_gateway: Callable[..., GatewayProcess],
    backend_factory: Callable[..., LoopbackBackend],
) -> None:  # fmt: skip
    """granian's listener accepts upgrades whatever the routes say at start."""
    backend = backend_factory()
    gw = _gateway(run_gateway, "granian", backend.url)
    with pytest.raises(InvalidStatus) as refused:
        _ws(gw, "/api/ws")
    assert refused.value.response.status_code == 403
    config = yaml.safe_load(gw.config_path.read_text())
    config["backends"]["chat"] = {"url": f"http://127.0.0.1:{echo.port}"}
    config["routes"][0]["websocket"] = False
    config["routes"].insert(
        0, {"match": {"prefix": "/api/ws"}, "backend": "chat", "websocket": True}
    )
    wait_generation(gw, 1)
    gw.config_path.write_text(yaml.safe_dump(config))
    wait_generation(gw, 2)
    with _ws(gw, "/api/ws") as ws:
        ws.send("reloaded")
        assert ws.recv(timeout=20) == "reloaded"


@pytest.mark.parametrize("server", SERVERS)
def test_a_message_over_max_request_body_ends_the_session(
    server: str, echo: EchoServer, run_gateway: Callable[..., GatewayProcess],
    backend_factory: Callable[..., LoopbackBackend],
) -> None:  # fmt: skip
    """hypercorn refuses the client's message itself, under granian the gateway does: it
    never reaches the backend, and the client gets 1009."""
    backend = backend_factory()
    gw = _gateway(run_gateway, server, backend.url, ws_url=f"http://127.0.0.1:{echo.port}",
                  extra={"limits": {"max_request_body": "1KiB"}})  # fmt: skip
    with _ws(gw, "/open/big") as ws:
        ws.send("x" * 1000)
        assert ws.recv(timeout=20) == "x" * 1000
        ws.send("x" * 4096)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=20)
    assert closed.value.rcvd is not None, closed.value
    assert closed.value.rcvd.code == 1009  # RFC 6455 §7.4.1: message too big
    assert echo.sizes == [1000]
