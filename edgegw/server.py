"""Running the gateway: runtime dir, the admin thread, and granian or hypercorn workers.

The supervisor process (this module) owns the admin listener; the data plane is
``config.workers`` worker processes of granian (default) or hypercorn, each loading the
ASGI app through the factory ``edgegw.app:create_app_from_env``. See docs/operations.md.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import logging.config
import math
import multiprocessing
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgegw.model import GatewayConfig

log = logging.getLogger("edgegw.server")

APP_FACTORY = "edgegw.app:create_app_from_env"
ENV_APP_FACTORY = "EDGEGW_APP_FACTORY"  # override of APP_FACTORY, for debugging only
ENV_CONFIG = "EDGEGW_CONFIG"
ENV_RUNTIME_DIR = "EDGEGW_RUNTIME_DIR"
ENV_PROM_DIR = "PROMETHEUS_MULTIPROC_DIR"

#: Worker-side logging: edgegw.* (including the app's ``edgegw.access`` log) to stdout.
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "access": {"format": "%(message)s"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stdout",
        },
        "access": {
            "class": "logging.StreamHandler",
            "formatter": "access",
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        "edgegw": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "edgegw.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}


@dataclass
class Runtime:
    """The directory supervisor and workers share (metrics, per-worker status)."""

    path: Path
    owned: bool  # created by us: removed entirely at exit

    @property
    def prometheus_dir(self) -> Path:
        return self.path / "prometheus"

    def close(self) -> None:
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            from edgegw.wasm.shm import QUEUE_SOCKETS, TABLE_FILE

            shutil.rmtree(self.prometheus_dir, ignore_errors=True)
            shutil.rmtree(self.path / QUEUE_SOCKETS, ignore_errors=True)
            (self.path / TABLE_FILE).unlink(missing_ok=True)


def prepare_runtime(config_path: Path) -> Runtime:
    """Create the runtime dir and export the environment workers need.

    Must run before anything imports prometheus_client: its value class is chosen from
    PROMETHEUS_MULTIPROC_DIR at import time.
    """
    given = os.environ.get(ENV_RUNTIME_DIR)
    if given:
        runtime = Runtime(Path(given), owned=False)
        runtime.path.mkdir(parents=True, exist_ok=True)
    else:
        runtime = Runtime(Path(tempfile.mkdtemp(prefix="edgegw-")), owned=True)
    # Stale files from an earlier run would be summed into /metrics: start clean.
    shutil.rmtree(runtime.prometheus_dir, ignore_errors=True)
    runtime.prometheus_dir.mkdir()
    os.environ[ENV_RUNTIME_DIR] = str(runtime.path)
    os.environ[ENV_PROM_DIR] = str(runtime.prometheus_dir)
    # Absolute but unresolved: workers follow the config's symlinks at each reload.
    os.environ[ENV_CONFIG] = os.path.abspath(config_path)
    return runtime


@dataclass
class AdminThread:
    """The admin aiohttp app on its own event loop in a daemon thread."""

    config: GatewayConfig
    runtime_dir: Path
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _started: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Bind the admin port; raises OSError if it cannot."""
        self._thread = threading.Thread(target=self._run, name="edgegw-admin", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise OSError("admin listener did not start")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start() or logged; thread must not die silently
            if not self._started.is_set():
                self._error = exc
                self._started.set()
            else:
                log.exception("admin listener failed")

    async def _main(self) -> None:
        from aiohttp import web

        from edgegw.admin import create_admin_app

        listen = self.config.admin.listen
        assert listen is not None
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(create_admin_app(self.config, self.runtime_dir), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, listen.host, listen.port).start()
            log.info("admin listening on http://%s", listen)
            self._started.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # loop already closed between the check and the call
                pass
        if self._thread is not None:
            self._thread.join(timeout)


def _granian_log_config() -> dict[str, Any]:
    # granian replaces its whole default dictConfig with ours (dict.update of top-level
    # keys), so merge: its own loggers keep their handlers, ours are added.
    from granian.log import LOGGING_CONFIG as GRANIAN_LOGGING

    merged: dict[str, Any] = copy.deepcopy(GRANIAN_LOGGING)
    for key in ("formatters", "handlers", "loggers"):
        section: dict[str, Any] = merged[key]
        section.update(copy.deepcopy(LOG_CONFIG[key]))
    return merged


def _run_granian(config: GatewayConfig, runtime: Runtime) -> int:
    from granian.constants import HTTPModes, Interfaces, Loops, SSLProtocols
    from granian.http import HTTP1Settings, HTTP2Settings
    from granian.log import LogLevels
    from granian.server import Server

    class EdgegwServer(Server):  # type: ignore[misc, valid-type]
        # granian answers SIGHUP by respawning its workers; edgegw reloads in place
        # instead (validated, atomic, no dropped connection): see edgegw/reload.py.
        def signal_handler_reload(self, *args: Any, **kwargs: Any) -> None:
            _sighup(runtime)

    loop = Loops.uvloop if _has_uvloop() else Loops.asyncio
    limits = config.limits
    server = EdgegwServer(
        _app_factory(),
        address=config.listen.host,
        port=config.listen.port,
        interface=Interfaces.ASGI,
        workers=config.workers,
        loop=loop,
        # auto: HTTP/1.1, and h2 by ALPN on TLS or by its preface (h2c prior knowledge).
        http=HTTPModes.auto if config.http2 else HTTPModes.http1,
        # granian's backpressure is a per-worker count of open connections (its default,
        # backlog // workers = 1024, locked every new client out once that many idle or
        # silent connections were held); the kernel caps the listen backlog at somaxconn.
        backlog=_backlog(limits.max_connections),
        backpressure=limits.max_connections,
        http1_settings=HTTP1Settings(
            # hyper's read buffer bounds the request head (at least 8 KiB); the exact limit
            # is the app's (edgegw.ingress), this one only bounds memory.
            max_buffer_size=max(8192, head_buffer(config)),
            # hyper's header timer runs from a head's first byte, and between requests
            # on a keep-alive connection; not before a connection's first byte.
            header_read_timeout=max(1, round(limits.header_timeout * 1000)),
        ),
        # On whatever the routes say, so a reload can add a WebSocket route; an upgrade on
        # a route without ``websocket: true`` is refused by the app (403, as Envoy).
        # Envoy's edge recommendations for HTTP/2 (100 streams, 64 KiB stream window); the
        # head bound as for HTTP/1.1 (granian's default is 16 MiB).
        http2_settings=HTTP2Settings(
            max_concurrent_streams=100,
            initial_stream_window_size=64 * 1024,
            max_headers_size=head_buffer(config),
        ),
        websockets=True,
        ssl_cert=config.tls.cert if config.tls else None,
        ssl_key=config.tls.key if config.tls else None,
        ssl_protocol_min=SSLProtocols.tls13
        if config.tls and config.tls.min_version == "1.3"
        else SSLProtocols.tls12,
        factory=True,
        log_level=LogLevels.info,
        log_dictconfig=_granian_log_config(),
        # The app writes its own access log (logger edgegw.access, stdout) with route and
        # upstream details granian cannot know; granian's would duplicate it.
        log_access=False,
        # SIGTERM: granian closes the listening socket, then each worker stops accepting
        # and finishes its requests; a worker still busy after drain_timeout is killed.
        workers_kill_timeout=max(1, math.ceil(config.drain_timeout)),
    )
    watcher = None
    if config.tls is not None:
        # granian's workers read the certificate when they start: a renewal respawns them
        # as granian's own SIGHUP does (a new worker first, then the old one stops
        # accepting and finishes its connections, up to drain_timeout).
        from edgegw.listener_tls import CertWatcher

        def respawn() -> None:
            Server.signal_handler_reload(server)  # type: ignore[no-untyped-call]

        watcher = CertWatcher(config.tls, respawn)
        watcher.start()
    try:
        server.serve()
    except SystemExit as exc:  # granian exits 1 when a worker died unexpectedly
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        if watcher is not None:
            watcher.close()
    return 0


def _run_hypercorn(config: GatewayConfig, runtime: Runtime) -> int:
    import hypercorn.run
    from hypercorn.run import run

    from edgegw.hypercorn_config import EdgegwConfig, close_listeners

    # hypercorn answers SIGHUP by restarting its workers, which would drop a config that
    # fails to load together with the workers. Its run() installs handlers through the
    # `signal` module it imported: hand it one whose SIGHUP registration is ours, and
    # whose SIGTERM/SIGINT ones also close the supervisor's listening sockets.
    def install(sig: int, handler: Any) -> Any:
        if sig == signal.SIGHUP:
            handler = lambda _sig, _frame: _sighup(runtime)  # noqa: E731
        elif sig in (signal.SIGTERM, signal.SIGINT) and callable(handler):
            handler = _then_close(handler, close_listeners)
        return signal.signal(sig, handler)

    shim = types.SimpleNamespace(**{k: getattr(signal, k) for k in dir(signal) if k.isupper()})
    shim.signal = install
    hypercorn.run.signal = shim  # type: ignore[assignment, attr-defined]

    hc = EdgegwConfig()
    hc.application_path = _app_factory() + "()"  # hypercorn evaluates it: calls the factory
    hc.bind = [str(config.listen)]
    hc.workers = config.workers
    hc.worker_class = "uvloop" if _has_uvloop() else "asyncio"
    hc.accesslog = None  # see _run_granian: the app logs access itself
    hc.errorlog = "-"
    hc.logconfig_dict = LOG_CONFIG
    hc.h11_max_incomplete_size = head_buffer(config)  # exact limit: edgegw.ingress
    # hypercorn's one connection timer runs from the connection's start, and again after
    # each response, until a complete request head: it covers silent and idle
    # connections and slow heads alike. It has no cap on open connections.
    hc.keep_alive_timeout = config.limits.idle_timeout
    hc.backlog = _backlog(config.limits.max_connections)
    hc.graceful_timeout = config.drain_timeout
    listener_tls(hc, config)
    return run(hc)


def listener_tls(hc: Any, config: GatewayConfig) -> None:
    """hypercorn's TLS and ALPN from ``tls`` and ``http2`` (docs/configuration.md)."""
    hc.alpn_protocols = ["h2", "http/1.1"] if config.http2 else ["http/1.1"]
    hc.websocket_max_message_size = config.limits.max_request_body
    if config.tls is not None:
        hc.edgegw_tls = config.tls
        hc.certfile, hc.keyfile = str(config.tls.cert), str(config.tls.key)


def head_buffer(config: GatewayConfig) -> int:
    """The servers' own bound on a request head. ``limits.max_header_bytes`` counts names,
    values and the target (as Envoy does) and is enforced exactly by the app; the raw head
    adds at most 3 bytes of framing per counted byte (``a: b\r\n``) plus the request line's."""
    return 3 * config.limits.max_header_bytes + 16 * 1024


def _then_close(handler: Any, close: Any) -> Any:
    def shutdown(sig: int, frame: Any) -> None:
        handler(sig, frame)
        close()

    return shutdown


def _sighup(runtime: Runtime) -> None:
    from edgegw.reload import request_reload

    log.info("SIGHUP: asking workers to reload")
    request_reload(runtime.path)


def _reopen_on_sigusr1(runtime: Runtime) -> None:
    """SIGUSR1 (logrotate): every worker reopens its access log file
    (edgegw/observe/access_log.py)."""
    from edgegw.observe.access_log import request_reopen

    signal.signal(signal.SIGUSR1, lambda _sig, _frame: request_reopen(runtime.path))


def _backlog(max_connections: int) -> int:
    """The listen backlog asked for (the kernel caps it at net.core.somaxconn)."""
    return max(1024, min(max_connections, 65535))


def _raise_nofile(config: GatewayConfig) -> None:
    """Raise this process's open-file limit (workers inherit it) to its hard limit: every
    client connection is a file descriptor, and a soft limit of 1024 would refuse
    connections long before ``limits.max_connections``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
    # Each worker holds its client connections and as many backend ones at worst.
    wanted = 2 * config.limits.max_connections + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "open-file limit %d is below %d (2 x limits.max_connections + 1024): "
            "clients may be refused before limits.max_connections",
            soft,
            wanted,
        )


def _sched_batch() -> None:
    """Put this thread, and so every worker process and thread started after it, under
    Linux's SCHED_BATCH policy (sched(7)): no wakeup preemption among them.

    A granian worker is a Python thread running the app and a tokio thread doing the HTTP
    I/O, which needs the GIL for every request. Under the default policy each wakeup of
    the tokio thread preempts the Python thread, finds the GIL held and sleeps again: two
    futile context switches. bench/run.py measures the difference (scenario
    ``plain-sched-other``; docs/benchmarks.md). The policy needs no privilege and keeps
    the nice value; ``sched_batch: false`` turns it off.
    """
    if not hasattr(os, "SCHED_BATCH"):  # not Linux
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:  # a sandbox may forbid it: serve anyway
        logging.getLogger("edgegw").warning("cannot use SCHED_BATCH: %s", exc)


def _warn_open_admin(config: GatewayConfig) -> None:
    """``admin.allow_open: true`` on a reachable address: say so at every start."""
    from edgegw.config import is_loopback

    admin = config.admin
    if admin.listen is None or admin.token or is_loopback(admin.listen.host):
        return
    log.warning(
        "!!! the admin API on %s has NO TOKEN and is reachable from other hosts "
        "(admin.allow_open: true): anyone there can reload the config and change flags. "
        "Set admin.token unless a network policy keeps it private !!!",
        admin.listen,
    )


def _app_factory() -> str:
    return os.environ.get(ENV_APP_FACTORY) or APP_FACTORY


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def serve(config: GatewayConfig, config_path: Path, log_level: str = "info") -> int:
    """Run the gateway until SIGTERM/SIGINT; returns the process exit code.

    ``config`` must already be validated (the CLI does it) and may carry command-line
    overrides (server, workers); workers re-read ``config_path`` themselves.
    """
    from edgegw.observe.loglevels import ENV_LOG_LEVEL, LEVELS

    LOG_CONFIG["loggers"]["edgegw"]["level"] = LEVELS[log_level]
    os.environ[ENV_LOG_LEVEL] = log_level  # the workers' edgegw level (edgegw/app.py)
    logging.config.dictConfig(LOG_CONFIG)
    _warn_open_admin(config)
    runtime = prepare_runtime(config_path)
    from edgegw.wasm.shm import create_table  # after prepare_runtime: imports prometheus

    # proxy-wasm shared data of all workers: they map this file (edgegw/wasm/shm.py).
    create_table(runtime.path, config.shared_data)
    _reopen_on_sigusr1(runtime)
    admin: AdminThread | None = None
    try:
        if config.admin.listen is not None:
            admin = AdminThread(config, runtime.path)
            try:
                admin.start()
            except OSError as exc:
                print(
                    f"edgegw: cannot start admin listener on {config.admin.listen}: {exc}",
                    file=sys.stderr,
                )
                return 1
        _raise_nofile(config)
        if config.sched_batch:
            _sched_batch()  # after the admin thread: it stays interactive
        # Workers start with a fresh interpreter (spawn, as hypercorn does) so they never
        # inherit the supervisor's admin thread, its event loop or its locks mid-use.
        multiprocessing.set_start_method("spawn", force=True)
        if config.server == "hypercorn":
            return _run_hypercorn(config, runtime)
        return _run_granian(config, runtime)
    finally:
        if admin is not None:
            admin.stop()
        runtime.close()
