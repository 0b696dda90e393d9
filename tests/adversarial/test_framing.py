"""Request framing and Host at the edge (RFC 9112 §3.2, §6): hostile requests on raw
sockets, and the exact bytes the backend then received. One gateway per server for the
module (``edge``, under granian and hypercorn); each test starts from empty backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.adversarial.conftest import (
    RawBackend,
    SharedGateway,
    complete_requests,
    ok_when_complete,
    raw_exchange,
    start_shared_gateway,
    status_of,
)
from tests.conftest import stop_process


@pytest.fixture(scope="module", params=["granian", "hypercorn"])
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedGateway]:
    backends = {"b": RawBackend(ok_when_complete), "auth": RawBackend(ok_when_complete)}
    for backend in backends.values():
        backend.start()
    doc = {
        "admin": None,
        "access_log": False,
        "limits": {"max_header_bytes": "64KiB"},
        "backends": {
            "b": {"url": backends["b"].url, "preserve_host": True},
            "auth": {"url": backends["auth"].url, "preserve_host": True},
        },
        "routes": [
            {"name": "auth", "match": {"prefix": "/", "host": "auth.example"}, "backend": "auth"},
            {"name": "all", "match": {"prefix": "/"}, "backend": "b"},
        ],
    }
    gw = start_shared_gateway(tmp_path_factory.mktemp("framing"), request.param, doc, backends)
    yield gw
    stop_process(gw.proc)
    for backend in backends.values():
        backend.close()


@pytest.fixture
def edge(shared: SharedGateway) -> SharedGateway:
    shared.reset()
    return shared


def to(edge: SharedGateway, *paths: bytes, backend: str = "b") -> list[tuple[bytes, bytes]]:
    """The complete requests ``backend`` got for ``paths`` (bytes of an earlier test's
    connection may still arrive: each test uses paths of its own)."""
    return [
        (head, body)
        for head, body in complete_requests(edge.received(backend))
        if head.split(b" ")[1].split(b"?")[0] in paths
    ]


def test_content_length_with_transfer_encoding_is_refused(edge: SharedGateway) -> None:
    smuggle = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    attack = (
        b"POST /clte HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s" % (5 + len(smuggle), smuggle)
    )
    out = raw_exchange(edge.port, attack)
    seen = edge.received()
    assert b"/smuggled" not in seen and b"content-length: %d" % (5 + len(smuggle)) not in seen
    assert out.count(b"HTTP/1.1 ") == 1  # one answer, then the connection closed
    if edge.server == "hypercorn":
        assert status_of(out) == 400 and b" /clte " not in seen
    else:
        # hyper (granian) drops Content-Length before the app sees the request and
        # processes it by Transfer-Encoding alone, closing the connection after: the
        # other behaviour RFC 9112 §6.1 allows. The backend got edgegw's own framing.
        assert b"\r\ntransfer-encoding: chunked\r\n" in seen
    # Well-framed bodies reach the backend framed by edgegw: chunked stays chunked (no
    # client Content-Length), a sized body carries exactly one Content-Length.
    edge.reset()
    chunked = (
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    assert status_of(raw_exchange(edge.port, chunked)) == 200
    sized = b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nwxyz"
    assert status_of(raw_exchange(edge.port, sized)) == 200
    requests = to(edge, b"/c", b"/s")
    assert [body for _head, body in requests] == [b"abc", b"wxyz"]
    (c_head, _), (s_head, _) = requests
    assert c_head.lower().count(b"transfer-encoding") == 1 and b"content-length" not in c_head
    assert s_head.count(b"\r\ncontent-length: 4") == 1 and b"transfer-encoding" not in s_head


def test_invalid_chunked_body_is_400(edge: SharedGateway) -> None:
    head = b"POST /bad-chunk HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    bad = head + b"3\r\nabc\r\nzz\r\n"
    out = raw_exchange(edge.port, bad, timeout=3)
    assert status_of(out) == 400
    assert not to(edge, b"/bad-chunk")  # the backend never got a whole request


def test_unsupported_transfer_coding_is_501(edge: SharedGateway) -> None:
    req = b"POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    assert status_of(raw_exchange(edge.port, req)) == 501
    assert b" /te " not in edge.received()


@pytest.mark.parametrize(
    "head",
    [
        b"GET /host HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # RFC 9112 §3.2: more than one
        b"GET /host HTTP/1.1\r\n\r\n",  # missing on HTTP/1.1
        b"GET /host HTTP/1.1\r\nHost: \r\n\r\n",  # empty: no authority for an http URI
        b"GET /host HTTP/1.1\r\nHost: a b/c\r\n\r\n",  # not uri-host [":" port]
        b"GET /host HTTP/1.1\r\nHost: a@b\r\n\r\n",
    ],
    ids=["two", "missing", "empty", "space-slash", "userinfo"],
)
def test_bad_host_is_400(edge: SharedGateway, head: bytes) -> None:
    assert status_of(raw_exchange(edge.port, head)) == 400
    assert b" /host " not in edge.received() + edge.received("auth")


def test_absolute_form_routes_on_its_authority(edge: SharedGateway) -> None:
    req = b"GET http://auth.example:81/abs?q=1 HTTP/1.1\r\nHost: other\r\n\r\n"
    assert status_of(raw_exchange(edge.port, req)) == 200
    if edge.server == "granian":
        # hyper keeps only the path of an absolute-form target when Host is present: the
        # app cannot see the authority, so Host decides there (docs/security.md).
        assert b" /abs" not in edge.received("auth")
        return
    assert b" /abs" not in edge.received()
    [(head, _)] = to(edge, b"/abs", backend="auth")
    assert head.startswith(b"GET /abs?q=1 HTTP/1.1\r\nhost: auth.example:81\r\n")


def test_max_header_bytes_is_exact(edge: SharedGateway) -> None:
    limit = 64 * 1024

    def request(counted: int) -> bytes:
        # Counted like Envoy's max_request_headers_kb: method, target, names and values.
        fill = counted - len(b"GET" + b"/big" + b"host" + b"a" + b"x-fill")
        return b"GET /big HTTP/1.1\r\nhost: a\r\nx-fill: %s\r\n\r\n" % (b"v" * fill)

    assert status_of(raw_exchange(edge.port, request(limit))) == 200
    assert status_of(raw_exchange(edge.port, request(limit + 1))) == 431
    huge = b"GET /big HTTP/1.1\r\nhost: a\r\nx-a: %s\r\nx-b: %s\r\n\r\n" % (
        b"v" * 56 * 1024,
        b"v" * 56 * 1024,
    )
    assert status_of(raw_exchange(edge.port, huge)) == 431  # 112 KiB
    assert len(to(edge, b"/big")) == 1
