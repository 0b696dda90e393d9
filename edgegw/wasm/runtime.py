"""The filters of one config in one worker: a ``Plugin`` per filter, and per request a
``Chain`` running a route's filters in Envoy's order (request phases in config order,
response phases in reverse). Implements ``edgegw.chain.FilterChains``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from edgegw.chain import Exchange, HttpCall
from edgegw.errors import EdgegwError
from edgegw.model import GatewayConfig, Route
from edgegw.wasm import _phase
from edgegw.wasm.geoip import open_country_lookup
from edgegw.wasm.plugin import Plugin, compile_filter
from edgegw.wasm.stream import Chain, Plan

log = logging.getLogger("edgegw.wasm")

STORE_CLUSTER = "edgegw.store"


class WasmRuntime:
    """Every filter of ``config`` loaded once; ``start(ex)`` gives a request its chain
    (None when its route has no filters)."""

    def __init__(self, config: GatewayConfig, plugins: dict[str, Plugin], http_call: HttpCall):
        self.config = config
        self.plugins = plugins
        self.http_call = http_call
        self.closed = False
        self._plans: dict[str, Plan] = {}  # per route name
        # start(ex): ex.route's Chain, or None when the route has no filters. In C:
        # served, every Python frame of a request runs with cold caches (bench/chain.py).
        self.start: Callable[[Exchange], Chain | None] = _phase.Starter(
            self._plans, self._plan, Chain
        )
        for plugin in plugins.values():
            plugin.start_ticks()  # ticks asked for during on_configure

    @classmethod
    async def create(
        cls,
        config: GatewayConfig,
        http_call: HttpCall,
        extra_clusters: frozenset[str] = frozenset(),
    ) -> WasmRuntime:
        """Compile every used filter off the event loop, then start each VM on it."""
        clusters = frozenset(config.backends) | extra_clusters | {STORE_CLUSTER}
        used = {name for route in config.routes for name in route.filters}
        used |= set(config.background)
        plugins: dict[str, Plugin] = {}
        geo = None
        if config.geoip is not None:
            geo = await asyncio.to_thread(open_country_lookup, config.geoip.database)
        try:
            for name in sorted(used):
                spec = config.filters[name]
                module, digest = await asyncio.to_thread(compile_filter, spec)
                plugins[name] = Plugin(spec, module, digest, http_call, clusters)
                plugins[name].geo = geo
        except BaseException:
            for plugin in plugins.values():
                plugin.close()
            raise
        return cls(config, plugins, http_call)

    def _plan(self, route: Route) -> Plan:
        plugins = tuple(self.plugins[name] for name in route.filters if name in self.plugins)
        return Plan(plugins, self.reload_plugin)

    def reload_plugin(self, plugin: Plugin) -> None:
        """``on_error: reload``: a fresh VM of the same module for the next requests."""
        if self.closed or self.plugins.get(plugin.name) is not plugin:
            return  # replaced already (another request failed on it too), or shutting down
        try:
            module, digest = compile_filter(plugin.spec)
            fresh = Plugin(plugin.spec, module, digest, self.http_call, plugin.clusters)
            fresh.geo = plugin.geo
        except EdgegwError as exc:  # keep the old VM rather than none
            log.error("filter '%s': reload after failure failed: %s", plugin.name, exc)
            return
        self.plugins[plugin.name] = fresh
        self._plans.clear()
        plugin.close()
        log.warning("filter '%s': replaced by a fresh VM after a failure", plugin.name)

    def close(self) -> None:
        """Close every VM (``Plugin.close``: their Stores are freed). Call it once no request
        runs on this runtime any more (``Pipeline.drain``); a request that still does gets
        WasmClosed from the filters it has not finished with. Idempotent."""
        if self.closed:
            return
        self.closed = True
        # The plans and the starter refer back to this runtime (reload_plugin, _plan):
        # let go of them so nothing keeps the closed plugins alive.
        self._plans.clear()
        self.start = _no_chain
        plugins, self.plugins = self.plugins, {}
        for plugin in plugins.values():
            plugin.close()

    async def aclose(self) -> None:
        self.close()


def _no_chain(_ex: Exchange) -> None:
    """A closed runtime's ``start``: no filters."""
    return None
