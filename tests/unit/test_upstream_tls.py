"""Upstream TLS against a real TLS backend on 127.0.0.1, with a CA and certificates made
here (``cryptography``): verification, SNI, a wrong CA refused (502), mTLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgegw.config import parse_config
from edgegw.errors import UpstreamConnectError, UpstreamUnreachable
from edgegw.model import Backend
from edgegw.upstream import HttpUpstream
from tests.tlsca import issue, make_ca, pem


@dataclass
class TlsBackend:
    port: int
    dir: Path
    sni: list[str | None] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)  # CN of each client certificate


@pytest.fixture
async def tls_backend(tmp_path: Path) -> AsyncIterator[TlsBackend]:
    """An HTTPS backend for ``users.internal`` that requires a client certificate of the
    client CA; files in ``tmp_path``: ca.pem, other-ca.pem, client.pem, client.key."""
    ca, client_ca, other = make_ca("edgegw test CA"), make_ca("client CA"), make_ca("other CA")
    server_cert, server_key = issue(ca, "users.internal", "users.internal")
    client_cert, client_key = issue(client_ca, "edgegw-client", None)
    files = {
        "ca.pem": pem(ca[0]),
        "other-ca.pem": pem(other[0]),
        "client-ca.pem": pem(client_ca[0]),
        "server.pem": server_cert,
        "server.key": server_key,
        "client.pem": client_cert,
        "client.key": client_key,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server_ctx.load_verify_locations(tmp_path / "client-ca.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    state = TlsBackend(0, tmp_path)

    def sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        state.sni.append(name)

    server_ctx.sni_callback = sni  # type: ignore[assignment]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = writer.get_extra_info("peercert") or {}
            subject = dict(pair[0] for pair in peer.get("subject", ()))
            state.clients.append(subject.get("commonName", ""))
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    state.port = server.sockets[0].getsockname()[1]
    yield state
    server.close()


def config_backend(tls: TlsBackend, tls_yaml: str, urls: list[str] | None = None) -> Backend:
    where = f"endpoints: {urls}" if urls else f"url: https://127.0.0.1:{tls.port}"
    text = f"version: 1\nbackends:\n  users:\n    {where}\n    tls: {tls_yaml}\n"
    return parse_config(text, source=tls.dir / "gateway.yaml").backends["users"]


async def fetch(backend: Backend) -> int:
    up = HttpUpstream({"users": backend})
    try:
        resp = await up.request("users", "GET", "/", [], None)
        resp.release()
        return resp.status
    finally:
        await up.aclose()


MTLS = "{ca: ca.pem, sni: users.internal, cert: client.pem, key: client.key}"


async def test_verified_with_sni_and_a_client_certificate(tls_backend: TlsBackend) -> None:
    assert await fetch(config_backend(tls_backend, MTLS)) == 200
    assert tls_backend.sni == ["users.internal"]  # sent though the URL names an address
    assert tls_backend.clients == ["edgegw-client"]  # mTLS: our certificate was presented


async def test_balanced_endpoints_use_the_same_tls(tls_backend: TlsBackend) -> None:
    port = tls_backend.port
    urls = [f"https://127.0.0.1:{port}", f"https://localhost:{port}"]
    backend = config_backend(tls_backend, MTLS, urls)
    assert backend.balanced
    up = HttpUpstream({"users": backend})
    try:
        for _ in range(4):
            resp = await up.request("users", "GET", "/", [], None)
            resp.release()
            assert resp.status == 200
        members = up._balancers["users"].members
        assert [(m.url, m.address) for m in members] == [(u, "127.0.0.1") for u in urls]
    finally:
        await up.aclose()
    assert set(tls_backend.sni) == {"users.internal"}
    assert tls_backend.clients == ["edgegw-client"] * 4


async def test_a_wrong_ca_is_refused_with_502(tls_backend: TlsBackend) -> None:
    wrong = "{ca: other-ca.pem, sni: users.internal, cert: client.pem, key: client.key}"
    with pytest.raises(UpstreamUnreachable) as info:  # no connection: nothing was sent
        await fetch(config_backend(tls_backend, wrong))
    assert info.value.status == 502
    assert "CERTIFICATE_VERIFY_FAILED" in info.value.detail
    assert tls_backend.clients == []  # no exchange happened


async def test_the_name_is_verified_against_sni(tls_backend: TlsBackend) -> None:
    with pytest.raises(UpstreamConnectError):
        await fetch(config_backend(tls_backend, "{ca: ca.pem, sni: other.internal}"))


async def test_without_a_client_certificate_the_backend_refuses(tls_backend: TlsBackend) -> None:
    with pytest.raises(UpstreamConnectError) as info:
        await fetch(config_backend(tls_backend, "{ca: ca.pem, sni: users.internal}"))
    assert info.value.status == 502
