"""The listener's certificate, renewed without a restart.

``CertWatcher`` watches ``tls.cert`` and ``tls.key`` as edgegw/reload.py watches
gateway.yaml (their folders, and the symlinks a Kubernetes Secret volume swaps), and calls
back once the pair on disk changed *and* loads as a pair: a renewal that writes the
certificate before the key is seen as one change once both are there, never as a broken
listener. What the callback does is the server's (edgegw/server.py, hypercorn_config.py):
hypercorn loads the new pair into the live ``SSLContext`` of each worker; granian's workers
are respawned gracefully, granian reading its certificate only when a worker starts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import watchfiles

from edgegw.config.listener import VERSIONS, check_pair
from edgegw.model import ListenerTLS

log = logging.getLogger("edgegw.tls")

DEBOUNCE_MS = 300  # a renewal writes two files: one change, not two
RECHECK_MS = 5000  # reading two small files: nothing next to a TLS handshake


def server_context(tls: ListenerTLS, alpn: list[str]) -> ssl.SSLContext:
    """The listener's context: ``min_version``, ALPN, no TLS compression (RFC 7540
    §9.2.1), the pair loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = VERSIONS[tls.min_version]
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(alpn)
    context.load_cert_chain(tls.cert, tls.key)
    return context


def _symlinks(path: Path) -> set[Path]:
    from edgegw.reload import symlinks_on  # prometheus_client: only once a watcher starts

    return symlinks_on(path)


class CertWatcher:
    """Calls ``renewed()`` from its own thread when the certificate pair changed on disk."""

    def __init__(self, tls: ListenerTLS, renewed: Callable[[], None]) -> None:
        self.tls = tls
        self.renewed = renewed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._digest = self.digest()

    def digest(self) -> str:
        h = hashlib.sha256()
        for path in (self.tls.cert, self.tls.key):
            try:
                h.update(path.read_bytes())
            except OSError:
                h.update(b"\0missing")
        return h.hexdigest()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edgegw-tls-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def check(self) -> bool:
        """Act on the files as they are now; True when ``renewed`` was called."""
        digest = self.digest()
        if digest == self._digest:
            return False
        problem = check_pair(self.tls.cert, self.tls.key)
        if problem is not None:
            log.error("tls: certificate files changed but not served (%s): waiting", problem)
            return False
        self._digest = digest
        log.info("tls: serving the renewed certificate %s to new connections", self.tls.cert)
        self.renewed()
        return True

    def _paths(self) -> set[Path]:
        files = {Path(os.path.abspath(p)) for p in (self.tls.cert, self.tls.key)}
        for path in list(files):
            files |= _symlinks(path)
            files.add(path.resolve())
        return files

    def _run(self) -> None:
        while not self._stop.is_set():
            files = self._paths()
            folders = {str(f.parent) for f in files if f.parent.is_dir()}
            names = {str(f) for f in files}

            def wanted(_change: watchfiles.Change, path: str, names: set[str] = names) -> bool:
                return os.path.abspath(path) in names

            try:
                for _changes in watchfiles.watch(
                    *folders,
                    watch_filter=wanted,
                    debounce=DEBOUNCE_MS,
                    step=50,
                    stop_event=self._stop,
                    recursive=False,
                    raise_interrupt=False,
                    # Also every RECHECK_MS without an event: a change made before this
                    # watcher started (or one it missed) is caught then.
                    rust_timeout=RECHECK_MS,
                    yield_on_timeout=True,
                ):
                    self.check()
                    if self._paths() != files:
                        break  # the links now lead elsewhere: watch those
            except Exception:  # the watcher must not die silently: log, retry
                log.exception("tls: watching the certificate failed")
                self._stop.wait(1.0)
