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

import socket

from hypercorn.config import Config, Sockets

#: The supervisor's listening sockets, once ``create_sockets`` ran.
LISTENERS: list[socket.socket] = []


class EdgegwConfig(Config):
    def create_sockets(self) -> Sockets:
        sockets: Sockets = super().create_sockets()
        LISTENERS[:] = [*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets]
        return sockets


def close_listeners() -> None:
    """Close the supervisor's copies (the workers' own stay open until they stop)."""
    for sock in LISTENERS:
        sock.close()
