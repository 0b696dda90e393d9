"""One filter VM: a wasmtime Store + Instance serving every request of a worker through
context ids (as Envoy does per worker thread), with its root context.

Loading and linking use wasmtime-py's public API; every call into the guest and every
hostcall goes through ``fastcall``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable
from pathlib import Path

import wasmtime

from edgegw.chain import CallResponse, HttpCall
from edgegw.errors import FilterLoadError, WasmClosed, WasmError
from edgegw.headers import REQUEST_ID, get, request_id
from edgegw.model import FilterSpec
from edgegw.observe import loglevels
from edgegw.promise import Promise
from edgegw.wasm import engine as engines
from edgegw.wasm import filter_metrics
from edgegw.wasm._native import ROOT_CONTEXT
from edgegw.wasm.abi import ABI_MARKERS
from edgegw.wasm.exports import HOSTCALLS, Answer
from edgegw.wasm.fastcall import (
    Host,
    Memory,
    RawFunc,
    define_host_func,
    raw_func,
    set_deadline,
)
from edgegw.wasm.geoip import CountryLookup
from edgegw.wasm.hostcalls_shared import SharedHostcalls
from edgegw.wasm.shared import QUEUES

_WASI = ("wasi_snapshot_preview1", "wasi_unstable")
_CONNECT_FAILURE_BODY = b"upstream connect error or disconnect/reset before headers"
_CONNECT_FAILURE_HEADERS = (
    (b"content-length", str(len(_CONNECT_FAILURE_BODY)).encode()),
    (b"content-type", b"text/plain"),
)


def _signature(params: tuple[str, ...], results: tuple[str, ...]) -> str:
    return f"({', '.join(params)}) -> ({', '.join(results)})"


class Plugin(SharedHostcalls):
    """A loaded filter. ``call`` runs a guest callback under the CPU deadline."""

    def __init__(
        self,
        spec: FilterSpec,
        module: wasmtime.Module,
        sha256: str,
        http_call: HttpCall,
        clusters: frozenset[str],
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.sha256 = sha256
        self.vm_id = spec.name.encode()
        self.root_id = (spec.root_id or spec.name).encode()
        self.root_context = ROOT_CONTEXT
        self.plugin_properties = {
            "plugin_name": spec.name.encode(),
            "plugin_root_id": self.root_id,
            "plugin_vm_id": self.vm_id,
        }
        self.log = loglevels.configure_filter(spec.name, spec.log_level)
        filter_metrics.track(self, spec.name)
        self.http_call = http_call
        self.clusters = clusters
        self.ticks = engines.cpu_ticks(spec.limits.cpu)
        self.call_response: CallResponse | None = None
        self.geo: CountryLookup | None = None
        self._next_token = 1
        self._calls: dict[int, int] = {}  # token -> context id that dispatched it
        self._tasks: set[asyncio.Task[None]] = set()
        self._tick: asyncio.TimerHandle | None = None
        self._tick_period = 0.0
        self._callbacks: list[Host] = []  # host function envs must outlive the instance
        self.store = wasmtime.Store(engines.engine())
        self.store.set_limits(memory_size=spec.limits.memory)
        self._instantiate(module)

    # --- loading ---------------------------------------------------------------------

    def _instantiate(self, module: wasmtime.Module) -> None:
        exports = {e.name for e in module.exports}
        if not any(marker in exports for marker in ABI_MARKERS):
            raise FilterLoadError(self.name, "not a proxy-wasm module (no ABI 0.2.x marker export)")
        linker = wasmtime.Linker(engines.engine())
        fast: list[tuple[str, Host]] = []  # header hostcalls whose common case is C
        linker.allow_shadowing = True
        if any(imp.module in _WASI for imp in module.imports):
            wasi = wasmtime.WasiConfig()
            wasi.inherit_stdout()  # filter output goes to the gateway's log
            wasi.inherit_stderr()
            self.store.set_wasi(wasi)
            linker.define_wasi()
        for imp in module.imports:
            if imp.module in _WASI:
                continue
            ty = imp.type
            name = imp.name or ""
            export = HOSTCALLS.get(name) if imp.module == "env" else None
            if export is None or not isinstance(ty, wasmtime.FuncType):
                raise FilterLoadError(self.name, f"unknown import {imp.module}.{name}")
            # As Envoy's linking does: a signature other than the ABI's is refused, so a
            # parameter can never be read as something it is not.
            declared = (tuple(map(str, ty.params)), tuple(map(str, ty.results)))
            expected = (export.wasm_params, export.wasm_results)
            if declared != expected:
                raise FilterLoadError(
                    self.name,
                    f"import env.{name} has type {_signature(*declared)}; "
                    f"proxy-wasm ABI v0.2.1 declares {_signature(*expected)}",
                )
            if export.answer is Answer.PYTHON:
                impl = getattr(self, name)
            else:
                impl = self.noop if export.answer is Answer.NOOP else self.unimplemented
            host = define_host_func(
                linker, "env", name, ty, impl, export.strings, export.lower_first, export.signed
            )
            if export.fast == "clock":
                host.set_clock()  # every filter asks for it: answered in C
            elif export.fast is not None:
                fast.append((export.fast, host))
            self._callbacks.append(host)
        # instantiate runs the start function, which may take a while
        set_deadline(self.store, engines.cpu_ticks(engines.START_SECONDS))
        try:
            instance = linker.instantiate(self.store, module)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise FilterLoadError(self.name, f"cannot instantiate: {exc}") from exc
        found = instance.exports(self.store)
        memory = found.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            raise FilterLoadError(self.name, "module exports no memory")
        self.memory = Memory(self.store, memory)
        for host in self._callbacks:
            self.memory.attach(host)
        self.funcs: dict[str, RawFunc] = {}
        for name in exports:
            item = found.get(name)
            if isinstance(item, wasmtime.Func):
                self.funcs[name] = raw_func(self.store, item, name, self.ticks)
        # The stream callbacks, resolved once (None: not exported): the per-request path.
        self.on_request_headers = self.funcs.get("proxy_on_request_headers")
        self.on_request_body = self.funcs.get("proxy_on_request_body")
        self.on_response_headers = self.funcs.get("proxy_on_response_headers")
        self.on_response_body = self.funcs.get("proxy_on_response_body")
        # The end of a stream, in Envoy's order (exported ones only).
        ends = ("proxy_on_log", "proxy_on_done", "proxy_on_delete")
        self.on_end = tuple(self.funcs[name] for name in ends if name in self.funcs)
        self.on_context_create = self.funcs.get("proxy_on_context_create")
        alloc = self.funcs.get("proxy_on_memory_allocate") or self.funcs.get("malloc")
        if alloc is None:
            raise FilterLoadError(
                self.name, "no allocator export (proxy_on_memory_allocate/malloc)"
            )
        self._return_bytes = self.memory.answerer(alloc)
        # Until now (a start function) these answered NOT_FOUND from C: no memory yet.
        for mode, host in fast:
            host.set_fast_edit(self, mode, alloc)  # native/headers.c
        try:
            for start in ("_initialize", "_start"):
                if start in self.funcs:
                    self._start_call(start)
                    break
            self._start_call("proxy_on_context_create", ROOT_CONTEXT, 0)
            if not self._start_call("proxy_on_vm_start", ROOT_CONTEXT, len(self.spec.vm_config)):
                raise FilterLoadError(self.name, "proxy_on_vm_start returned false")
            if not self._start_call("proxy_on_configure", ROOT_CONTEXT, len(self.spec.config)):
                raise FilterLoadError(self.name, "proxy_on_configure rejected the configuration")
        except WasmError as exc:
            raise FilterLoadError(self.name, f"failed during start: {exc}") from exc

    def _start_call(self, name: str, *args: int) -> int:
        """``call`` under the start deadline (engine.START_SECONDS), not limits.cpu: the
        same exports serve requests later (a stream's context create) with limits.cpu."""
        func = self.funcs.get(name)
        if func is None:
            return 0
        per_request, func.ticks = func.ticks, engines.cpu_ticks(engines.START_SECONDS)
        try:
            return func(*args)
        finally:
            func.ticks = per_request

    # --- calling into the guest --------------------------------------------------------

    def call(self, name: str, *args: int) -> int:
        """Run export ``name`` (0 if the module does not export it) under the deadline.
        Raises WasmTrap / WasmDeadline."""
        func = self.funcs.get(name)
        if func is None:
            return 0
        return func(*args)

    # --- asynchronous work: http calls, ticks, queues -----------------------------------

    def dispatch_call(
        self,
        cluster: str,
        method: str,
        path: str,
        authority: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
    ) -> int:
        token = self._next_token
        self._next_token += 1
        state = self.current
        if state is not None and get(headers, REQUEST_ID) is None:
            # A call made for a request carries that request's id (tracing across the
            # call), unless the filter set one itself. Calls from the root context
            # (ticks, configure) belong to no request.
            rid = get(state.ex.request_headers, REQUEST_ID)
            if rid is not None:
                headers.append((REQUEST_ID, rid))
        context = ROOT_CONTEXT
        if state is not None:
            # Newest first: a filter calls out mostly from on_request_headers, just after
            # its stream was created (the last entry), not from a stream started long ago.
            streams = self.streams
            for c in reversed(streams):
                if streams[c] is state:
                    context = c
                    break
        self._calls[token] = context
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # `edgegw check` starts VMs without a loop: nothing to call
            return token
        pending = self.http_call(cluster, method, path, authority, headers, body, timeout)
        if isinstance(pending, Promise):
            # An in-process cluster (the store): answered from its callback, no task
            # (then() never calls back inside this hostcall). The callback runs where the
            # answer arrived (the Redis connection's reader): the guest runs in this
            # request's context, as a task would have run it (tracing's current span).
            request_context = contextvars.copy_context()
            pending.then(functools.partial(self._answered, token, request_context))
            return token
        task = loop.create_task(self._deliver(token, pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return token

    async def _deliver(self, token: int, pending: Awaitable[CallResponse]) -> None:
        self._delivered(token, await pending)

    def _answered(
        self, token: int, context: contextvars.Context, answered: Promise[CallResponse]
    ) -> None:
        exc = answered.error
        response = answered.result() if exc is None else CallResponse(0, error=repr(exc))
        context.run(self._delivered, token, response)

    def _delivered(self, token: int, response: CallResponse) -> None:
        if response.status == 0 and not response.timed_out:
            # Envoy's router answers an unreachable cluster itself (503, with headers);
            # only a timeout reaches the filter as a failure (0 headers).
            response = CallResponse(503, list(_CONNECT_FAILURE_HEADERS), _CONNECT_FAILURE_BODY)
        context = self._calls.pop(token, ROOT_CONTEXT)
        if self.closed:
            return
        state = self.streams.get(context)
        self.current = state
        self.call_response = response
        ok = response.status != 0
        try:
            self.call(
                "proxy_on_http_call_response",
                ROOT_CONTEXT,
                token,
                len(response.headers) + 1 if ok else 0,
                len(response.body) if ok else 0,
                0,
            )
        except WasmError as exc:
            if state is not None and state.resume is not None:
                state.failure = (self, exc)  # the paused chain applies our on_error
                state.wake()
                return
            if state is None:
                self.log.error("on_http_call_response failed: %s", exc)
            else:
                rid = request_id(state.ex.request_headers)
                self.log.error("on_http_call_response failed: %s request_id=%s", exc, rid)
            if state is not None and state.local_reply is None:
                from edgegw.problem import problem

                state.local_reply = problem(503, f"filter '{self.name}' failed", filter=self.name)
                state.wake()
        finally:
            self.call_response = None

    def set_tick_period(self, period_ms: int) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self._tick_period = period_ms / 1000
        self.start_ticks()

    def start_ticks(self) -> None:
        """Schedule the next tick; without a running loop (a VM started by a thread or by
        `edgegw check`) the runtime calls this again once the loop runs."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._tick_period and self._tick is None and not self.closed:
            self._tick = loop.call_later(self._tick_period, self._on_tick)

    def _on_tick(self) -> None:
        if self.closed:
            return
        self.current = None
        try:
            self.call("proxy_on_tick", ROOT_CONTEXT)
        except WasmError as exc:
            self.log.error("on_tick failed: %s", exc)
        self._tick = None
        self.start_ticks()

    def queue_ready(self, queue_id: int) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        def ready() -> None:  # later, never inside the enqueueing filter's callback
            if self.closed:
                return
            self.current = None
            try:
                self.call("proxy_on_queue_ready", ROOT_CONTEXT, queue_id)
            except WasmError as exc:
                self.log.error("on_queue_ready failed: %s", exc)

        loop.call_soon(ready)

    def close(self) -> None:
        """Shut the VM down and free it: the root context's on_done / on_delete, then the
        Store (instance, linear memory) and every link between this plugin and its host
        functions. Idempotent; a closed VM takes no new stream (``_native.Chain``: its contexts
        fail with WasmClosed) and is never called into again.

        Without this a plugin sits in a reference cycle (its Hosts hold its bound methods,
        and itself for the fast header edits; it holds its Hosts) that only the cycle
        collector frees, and never for the VMs alive at startup, which ``gc.freeze()``
        (``GatewayApp.startup``) exempts from collection: every reload leaked them with
        their Stores. Once the cycle is broken, reference counting frees the plugin when
        its runtime lets go of it."""
        if self.closed:
            return
        self.closed = True
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        for task in self._tasks:
            task.cancel()
        self.current = None
        try:
            self.call("proxy_on_done", ROOT_CONTEXT)
            self.call("proxy_on_delete", ROOT_CONTEXT)
        except WasmError as exc:
            self.log.warning("root context shutdown failed: %s", exc)
        self._fail_paused()
        self._free()

    def _fail_paused(self) -> None:
        """A request paused on this VM (waiting for its http_call) would wait for an
        answer that never comes: it fails now, by its on_error policy (stream.Chain)."""
        for state in self.streams.values():
            if state.resume is not None and state.failure is None:
                state.failure = (self, WasmClosed(f"filter '{self.name}': VM closed"))
                state.wake()

    def _free(self) -> None:
        QUEUES.forget(self.queue_ready)
        self.streams.clear()
        self.funcs = {}
        self.on_request_headers = self.on_request_body = None
        self.on_response_headers = self.on_response_body = None
        self.on_context_create = None
        self.on_end = ()
        self.memory.close()
        # No guest code runs after this, so no Host is called again: they can go.
        self.store.close()
        self._callbacks.clear()


def compile_filter(spec: FilterSpec) -> tuple[wasmtime.Module, str]:
    """Compile ``spec.wasm`` (or take it from the disk cache); blocking, so call it in a
    thread while serving. Raises FilterLoadError naming the filter and the reason."""
    try:
        return engines.load_module(Path(spec.wasm))
    except OSError as exc:
        raise FilterLoadError(spec.name, f"cannot read {spec.wasm}: {exc.strerror}") from exc
    except wasmtime.WasmtimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid module"
        raise FilterLoadError(spec.name, f"not a valid wasm module: {first}") from exc


async def _no_calls(*_args: object) -> CallResponse:
    return CallResponse(0, error="no upstreams while checking")


def check_filter(spec: FilterSpec, clusters: frozenset[str] = frozenset()) -> None:
    """What `edgegw check` does per filter: compile, link, instantiate, vm_start and
    configure, then shut the VM down. Raises FilterLoadError."""
    module, digest = compile_filter(spec)
    Plugin(spec, module, digest, _no_calls, clusters).close()
