"""hypercorn's ``Config``, remembering the listening sockets it creates.

hypercorn's supervisor keeps its copy of each listening socket open until every worker
has exited, so during a graceful shutdown the kernel still completes handshakes that no
worker will ever accept; they are reset at the end, and a load balancer sees requests
lost. edgegw/server.py closes these copies as soon as SIGTERM arrives: the socket then
stops listening the moment the workers stop accepting, and new clients are refused
(retried elsewhere) instead.

A module of its own because hypercorn pickles the config for each worker, which imports
this class by name.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from hypercorn.config import Config, Sockets

from edgegw.listener_tls import CertWatcher, server_context
from edgegw.model import ListenerTLS

#: The supervisor's listening sockets, once ``create_sockets`` ran.
LISTENERS: list[socket.socket] = []


#: The worker's certificate watchers (one per listener context; see create_ssl_context).
WATCHERS: list[CertWatcher] = []


class EdgegwConfig(Config):
    #: gateway.yaml's ``tls`` (pickled to the workers with the rest of the config).
    edgegw_tls: ListenerTLS | None = None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        """The listener's context, made once per worker (hypercorn's asyncio worker, after
        the app's startup, on the worker's loop). A renewed pair is loaded into this same
        context (``SSLContext.load_cert_chain``): new handshakes get it, established
        connections keep theirs."""
        tls = self.edgegw_tls
        if tls is None:
            return super().create_ssl_context()
        context = server_context(tls, self.alpn_protocols)
        context.set_ciphers(self.ciphers)  # hypercorn's ECDHE+AESGCM (RFC 7540 §9.2.2)
        loop = asyncio.get_running_loop()

        def renewed() -> None:
            # On the loop's thread: never while the loop is making a handshake from it.
            loop.call_soon_threadsafe(context.load_cert_chain, tls.cert, tls.key)

        watcher = CertWatcher(tls, renewed)
        watcher.start()
        WATCHERS.append(watcher)
        return context

    def create_sockets(self) -> Sockets:
        sockets: Sockets = super().create_sockets()
        LISTENERS[:] = [*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets]
        return sockets


def close_listeners() -> None:
    """Close the supervisor's copies (the workers' own stay open until they stop)."""
    for sock in LISTENERS:
        sock.close()
