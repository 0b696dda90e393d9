"""A misbehaving backend must not harm the next, unrelated request (issue #15, item 10)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.adversarial.conftest import RawBackend, raw_exchange, status_of
from tests.conftest import GatewayProcess

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@pytest.mark.parametrize(
    "junk",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nEVIL!",  # a whole second response
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n",
        b"\x00garbage that is no response\r\n",
    ],
)
def test_bytes_after_a_response_do_not_reach_the_next_request(
    run_gateway: Callable[..., GatewayProcess],
    raw_backend: Callable[[Callable[[bytes], bytes | None]], RawBackend],
    junk: bytes,
) -> None:
    def reply(buf: bytes) -> bytes | None:
        # A correct response followed by ``junk`` in the same write, for every request
        # (the gateway sends one at a time); the backend keeps the connection open.
        return OK + junk if buf.endswith(b"\r\n\r\n") else None

    backend = raw_backend(reply)
    gw = run_gateway(
        {
            "workers": 1,
            "backends": {"b": {"url": backend.url, "max_connections": 1}},
            "routes": [{"name": "r", "match": {"prefix": "/"}, "backend": "b"}],
        }
    )
    for i in range(4):
        response = raw_exchange(
            gw.port, b"GET /n%d HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n" % i
        )
        assert status_of(response) == 200, (i, response, gw.output()[-2000:])
        assert response.endswith(b"\r\n\r\nok"), response
    # The backend saw each request on a fresh connection: none was reused after junk.
    assert len(backend.received) == 4
