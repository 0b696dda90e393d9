"""The ASGI application: lifespan (pools, filters) and dispatch to the current pipeline.

``create_app_from_env`` is the factory granian and hypercorn workers load (see
edgegw/server.py); ``create_app`` builds an app from a config object. A reload builds a
complete new ``Pipeline`` and swaps it in; requests keep the pipeline they started on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from edgegw.chain import STORE_CLUSTER, FilterChains, HttpCall
from edgegw.config import load_config
from edgegw.errors import StoreError
from edgegw.model import GatewayConfig
from edgegw.observe import access_log, load_metrics, loglevels, metrics
from edgegw.pipeline import Pipeline
from edgegw.reload import Reloader
from edgegw.store import open_store
from edgegw.store.api import StoreAPI
from edgegw.store.mirror import FlagMirror
from edgegw.types import Receive, Scope, Send
from edgegw.upstream import HttpUpstream
from edgegw.wsproxy import serve_websocket

log = logging.getLogger("edgegw.app")

ENV_CONFIG = "EDGEGW_CONFIG"
ENV_RUNTIME_DIR = "EDGEGW_RUNTIME_DIR"
#: Builds the filter chains of a config: ``(config, http_call) -> chains``.
ChainsFactory = Callable[[GatewayConfig, HttpCall], Awaitable[FilterChains | None]]
GC_THRESHOLD = 20_000
DRAIN_TIMEOUT = 60.0  # seconds an old pipeline may keep serving in-flight requests


class GatewayApp:
    """ASGI entry point holding the current ``Pipeline``."""

    def __init__(
        self,
        config: GatewayConfig,
        chains: FilterChains | None = None,
        *,
        chains_factory: ChainsFactory | None = None,
        extra_calls: Mapping[str, HttpCall] | None = None,
        watch: bool = False,
    ) -> None:
        self.chains_factory = chains_factory
        self.watch = watch  # reload when gateway.yaml or a .wasm file changes
        self.reloader: Reloader | None = None
        # The store lives as long as the app: a reload keeps it (and its counters).
        self.store_api = StoreAPI(open_store(config.store), config.store)
        self.extra_calls = {STORE_CLUSTER: self.store_api.call, **(extra_calls or {})}
        if STORE_CLUSTER in config.backends:  # pointed elsewhere on purpose: a real backend
            del self.extra_calls[STORE_CLUSTER]
        self.pipeline = Pipeline(config, HttpUpstream(config.backends, self.extra_calls), chains)
        self._started = False
        self._retiring: set[asyncio.Task[None]] = set()
        load_metrics.track_app(self)  # edgegw_requests_in_flight
        self._mirror: FlagMirror | None = None

    @property
    def inflight(self) -> int:
        """Requests running on the current pipeline."""
        return self.pipeline.inflight

    @property
    def config(self) -> GatewayConfig:
        return self.pipeline.config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.pipeline.handle(scope, receive, send)
        elif kind == "websocket":
            await serve_websocket(self.pipeline, scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # reported to the server, which exits
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def build(self, config: GatewayConfig) -> Pipeline:
        """A complete pipeline for ``config`` (pools, filter VMs); raises if it cannot."""
        upstream = HttpUpstream(config.backends, self.extra_calls)
        upstream.start()
        chains = None
        if self.chains_factory is not None:
            try:
                chains = await self.chains_factory(config, upstream.call)
            except BaseException:
                await upstream.aclose()
                raise
        return Pipeline(config, upstream, chains)

    async def startup(self) -> None:
        """Load the filters of the initial config (needs the event loop)."""
        if self._started:
            return
        self._started = True
        if self.chains_factory is not None and self.pipeline.chains is None:
            self.swap(await self.build(self.config))
        if isinstance(self.pipeline.upstream, HttpUpstream):
            self.pipeline.upstream.start()  # health checks begin now
        store = self.store_api.store
        try:
            await store.seed_flags(dict(self.config.store.flags))
        except StoreError as exc:  # flags were validated with the config: the store is down
            log.warning("cannot seed flags now: %s", exc)
        self._mirror = FlagMirror(store)  # one process per host mirrors the flags
        await self._mirror.start()
        # Requests allocate many short-lived objects; the default gen-0 threshold (700)
        # runs a collection every few requests. Objects alive now (modules, config, VMs)
        # are frozen out of future collections.
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 20, 20)
        if self.watch and self.config.source is not None:
            runtime = os.environ.get(ENV_RUNTIME_DIR)
            self.reloader = Reloader(self, self.config.source, Path(runtime) if runtime else None)
            self.reloader.start()

    def swap(self, new: Pipeline) -> None:
        """Serve new requests from ``new``; the old pipeline drains, then closes."""
        old, self.pipeline = self.pipeline, new
        task = asyncio.ensure_future(self._retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, old: Pipeline) -> None:
        if not await old.drain(DRAIN_TIMEOUT):
            log.warning("closing a runtime with %d requests still running", old.inflight)
        try:
            await old.aclose()
        except Exception:  # a filter failing in on_done must not break the swap
            log.exception("closing the previous runtime failed")

    async def aclose(self) -> None:
        if self.reloader is not None:
            await self.reloader.aclose()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        await self.pipeline.aclose()
        if self._mirror is not None:
            await self._mirror.aclose()
        await self.store_api.aclose()
        metrics.flush()
        access_log.flush_all()


async def wasm_chains(config: GatewayConfig, http_call: HttpCall) -> FilterChains | None:
    """The proxy-wasm filters of ``config`` (None when no route uses any)."""
    if not any(route.filters for route in config.routes) and not config.background:
        return None
    from edgegw.wasm import WasmRuntime

    return await WasmRuntime.create(config, http_call)


def create_app(
    config: GatewayConfig,
    *,
    chains: FilterChains | None = None,
    extra_calls: Mapping[str, HttpCall] | None = None,
    watch: bool = False,
) -> GatewayApp:
    """The gateway for ``config``: its proxy-wasm filters load at startup (ASGI lifespan).

    ``chains`` replaces those filters (embedding, tests; a reload then runs without
    filters); ``extra_calls`` adds in-process clusters for ``proxy_http_call`` next to
    ``edgegw.store``; ``watch`` reloads on changes of the config file or its modules.
    """
    factory = None if chains is not None else wasm_chains
    return GatewayApp(config, chains, chains_factory=factory, extra_calls=extra_calls, watch=watch)


def create_app_from_env() -> GatewayApp:
    """The worker-side factory: the config path comes from ``EDGEGW_CONFIG``."""
    runtime = os.environ.get(ENV_RUNTIME_DIR)
    access_log.set_runtime_dir(Path(runtime) if runtime else None)
    loglevels.configure_root(os.environ.get(loglevels.ENV_LOG_LEVEL) or "info")
    loglevels.refresh(Path(runtime) if runtime else None)
    with contextlib.suppress(ValueError):  # not the main thread: the server's business
        # SIGUSR1 is the supervisor's (edgegw/server.py); its default would kill a worker.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    return create_app(load_config(Path(os.environ[ENV_CONFIG])), watch=True)
