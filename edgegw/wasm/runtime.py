"""The filters of one config in one worker: a ``Plugin`` per filter, and per request a
``Chain`` running a route's filters in Envoy's order (request phases in config order,
response phases in reverse). Implements ``edgegw.chain.FilterChains``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from edgegw.chain import STORE_CLUSTER, Exchange, HttpCall
from edgegw.errors import EdgegwError, WasmVmFailed
from edgegw.model import GatewayConfig, Route
from edgegw.wasm import _native
from edgegw.wasm.geoip import open_country_lookup
from edgegw.wasm.plugin import Plugin, compile_filter
from edgegw.wasm.stream import Chain, Plan

log = logging.getLogger("edgegw.wasm")

RELOAD_INTERVAL = 1.0  # seconds: at most one fresh VM per filter this often (on_trap)


class WasmRuntime:
    """Every filter of ``config`` loaded once; ``start(ex)`` gives a request its chain
    (None when its route has no filters)."""

    def __init__(self, config: GatewayConfig, plugins: dict[str, Plugin], http_call: HttpCall):
        self.config = config
        self.plugins = plugins
        self.http_call = http_call
        self.closed = False
        self._plans: dict[str, Plan] = {}  # per route name
        self.failed: dict[str, WasmVmFailed] = {}  # filters with no VM serving (on_trap)
        self._reloaded: dict[str, float] = {}  # filter -> loop time of its last fresh VM
        self._revivals: dict[str, asyncio.TimerHandle] = {}  # failed filters' next VM
        # start(ex): ex.route's Chain, or None when the route has no filters. In C:
        # served, every Python frame of a request runs with cold caches (bench/chain.py).
        self.start: Callable[[Exchange], Chain | None] = _native.Starter(
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
        return Plan(plugins, self.trapped, self.failed)

    def trapped(self, plugin: Plugin) -> None:
        """A callback of ``plugin`` failed (trap, CPU deadline, hostcall failure): the guest
        stopped halfway, so its memory may hold half-made changes. Its ``on_trap`` decides
        what serves the next requests: a fresh VM (``reload``), none (``fail``, Envoy's
        behaviour: requests follow ``on_error`` until the config reloads), or the same VM
        (``keep``).

        A new VM costs tens of milliseconds of the worker's loop, so one filter gets at
        most one per ``RELOAD_INTERVAL``: a VM failing sooner after its predecessor is
        failed (as with ``fail``) until that interval has passed, then replaced. Requests
        that make a filter trap on purpose cannot make the worker start VMs nonstop."""
        if self.closed or self.plugins.get(plugin.name) is not plugin:
            return  # replaced already (another request failed on it too), or shutting down
        if plugin.name in self.failed:
            return  # failed already
        policy = "reload" if plugin.spec.on_error == "reload" else plugin.spec.on_trap
        if policy == "keep":
            return
        loop = asyncio.get_running_loop()
        wait = self._reloaded.get(plugin.name, -RELOAD_INTERVAL) + RELOAD_INTERVAL - loop.time()
        if policy == "reload" and wait <= 0:
            self.reload_plugin(plugin)
            return
        self.failed[plugin.name] = WasmVmFailed(f"filter '{plugin.name}' failed earlier")
        self._plans.clear()
        plugin.close()  # abandoned: nothing calls into it again
        if policy == "fail":
            log.error("filter '%s': failed for good (on_trap: fail)", plugin.name)
            return
        log.error("filter '%s': failed again; a fresh VM in %.1fs", plugin.name, wait)
        self._revivals[plugin.name] = loop.call_later(wait, self._revive, plugin)

    def _revive(self, plugin: Plugin) -> None:
        del self._revivals[plugin.name]
        if self.reload_plugin(plugin):
            del self.failed[plugin.name]

    def reload_plugin(self, plugin: Plugin) -> bool:
        """A fresh VM of ``plugin``'s module for the next requests (``on_trap: reload``);
        False when it cannot be made (the old one stays)."""
        if self.closed or self.plugins.get(plugin.name) is not plugin:
            return False
        try:
            module, digest = compile_filter(plugin.spec)
            fresh = Plugin(plugin.spec, module, digest, self.http_call, plugin.clusters)
            fresh.geo = plugin.geo
        except EdgegwError as exc:  # keep the old VM rather than none
            log.error("filter '%s': reload after failure failed: %s", plugin.name, exc)
            return False
        self._reloaded[plugin.name] = asyncio.get_running_loop().time()
        self.plugins[plugin.name] = fresh
        self._plans.clear()
        plugin.close()
        log.warning("filter '%s': replaced by a fresh VM after a failure", plugin.name)
        return True

    def close(self) -> None:
        """Close every VM (``Plugin.close``: their Stores are freed). Call it once no request
        runs on this runtime any more (``Pipeline.drain``); a request that still does gets
        WasmClosed from the filters it has not finished with. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for timer in self._revivals.values():
            timer.cancel()
        self._revivals.clear()
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
