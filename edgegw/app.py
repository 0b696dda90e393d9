"""The ASGI application: lifespan (pools, filters, store) and dispatch to the pipeline.

``create_app_from_env`` is the factory granian and hypercorn workers load (see
edgegw/server.py); ``create_app`` builds an app from a config object.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from edgegw.chain import FilterChains
from edgegw.config import load_config
from edgegw.model import GatewayConfig
from edgegw.pipeline import Pipeline
from edgegw.types import Receive, Scope, Send
from edgegw.upstream import AiohttpUpstream

log = logging.getLogger("edgegw.app")

ENV_CONFIG = "EDGEGW_CONFIG"


class GatewayApp:
    """ASGI entry point. ``pipeline`` is replaced as a whole on reload; a request keeps
    the pipeline it started with."""

    def __init__(self, config: GatewayConfig, chains: FilterChains | None = None) -> None:
        self.config = config
        self.upstream = AiohttpUpstream(config.backends)
        self.pipeline = Pipeline(config, self.upstream, chains)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.pipeline.handle(scope, receive, send)
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

    async def startup(self) -> None:
        """Open what needs the event loop (pools open lazily on first use)."""

    async def aclose(self) -> None:
        await self.upstream.aclose()
        if self.pipeline.chains is not None:
            await self.pipeline.chains.aclose()


def create_app(config: GatewayConfig, chains: FilterChains | None = None) -> GatewayApp:
    return GatewayApp(config, chains)


def create_app_from_env() -> GatewayApp:
    """The worker-side factory: the config path comes from ``EDGEGW_CONFIG``."""
    return create_app(load_config(Path(os.environ[ENV_CONFIG])))
