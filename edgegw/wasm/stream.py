"""One request through a route's proxy-wasm filters (``edgegw.chain.StreamFilters``).

Order as Envoy shows it: request phases run in config order, response phases in
reverse; a filter returning Pause stops the iteration until it continues (e.g. after its
http_call) or replies. A failing filter follows its ``on_error`` policy and is not called
again for that request (Envoy never calls a failed VM again). A local or failure reply
sent in the request direction goes through the response callbacks of the filters the
request reached (Envoy's ``sendLocalReply``), in reverse order.

The common case runs in C (``_native.Chain``, which this ``Chain`` extends): create the
contexts, run a header phase while filters continue, end the streams. Whatever stops a
loop comes back here, as do the body phases.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from time import perf_counter
from typing import Final

from edgegw.chain import Exchange, LocalReply
from edgegw.errors import WasmClosed, WasmError, WasmVmFailed
from edgegw.headers import request_id
from edgegw.problem import problem
from edgegw.tracing.hooks import filter_ended, filter_span
from edgegw.types import Headers
from edgegw.wasm import _native, filter_metrics
from edgegw.wasm.abi import Action
from edgegw.wasm.pause import WATCH
from edgegw.wasm.plugin import Plugin
from edgegw.wasm.state import StreamState

log = logging.getLogger("edgegw.wasm")

PAUSE_TIMEOUT = 30.0  # a filter that paused and never resumed fails the request


class _Paused(enum.Enum):
    """The marker ``Chain._stopped`` returns when a filter paused the stream."""

    PAUSED = enum.auto()


PAUSED: Final = _Paused.PAUSED  # `step is PAUSED` narrows the type for mypy
_PAUSE = int(Action.PAUSE)  # an IntEnum member lookup is slow on Python 3.11
# A hook's WasmError is its answer (``Chain._stopped``); a Chain's state a StreamState; a
# closed VM's hooks are not called, a WasmClosed is their answer.
_native.set_types(WasmError, StreamState, WasmClosed)
# C reads an Exchange's fields by slot offset (native/exchange.c), not by attribute name.
_native.set_exchange(Exchange)

Hook = Callable[..., int]
_HEADER_PHASES = {1: "request_headers", -1: "response_headers"}  # by ``step``
_BODY_PHASES = {True: "request_body", False: "response_body"}  # by ``request``


class Plan(_native.Plan):
    """What every request of one route needs of its filters, built once per route."""

    __slots__ = ()
    plugins: tuple[Plugin, ...]

    def __init__(
        self,
        plugins: tuple[Plugin, ...],
        trapped: Callable[[Plugin], None],
        failed: Mapping[str, WasmVmFailed] | None = None,
    ) -> None:
        # A failed VM (on_trap: fail) gets no stream context: creating one raises, so the
        # filter is off for the request and follows on_error where the request reaches it.
        failed = failed or {}
        super().__init__(
            plugins,
            tuple(
                _refuse(failed[p.name]) if p.name in failed else p.on_context_create
                for p in plugins
            ),
            tuple(p.on_request_headers for p in plugins),
            tuple(p.on_response_headers for p in plugins),
            tuple(p.on_end for p in plugins),
            any(p.on_response_body is not None for p in plugins),
            trapped,  # a filter of the plan failed: on_trap (``reload`` in C)
        )


def _refuse(exc: WasmVmFailed) -> Hook:
    detail = str(exc)

    def create(*_args: int) -> int:
        raise WasmVmFailed(detail)  # a new one each time: a raised one keeps its traceback

    return create


class Chain(_native.Chain):
    """The filters of one request; built by ``WasmRuntime.start``.

    Made, run through the header phases while every filter continues, and ended in C
    (``_native.Chain``): creating it creates each filter's stream context, one id shared
    by every VM of the chain (ids only need to be unique within a VM, as each Envoy VM
    numbers its own). Everything else is here.

    ``off`` holds the filters not called again in this request (index -> None): failed
    ones, and those the request never reached because an earlier filter replied. A
    context whose creation failed maps to its error (its id is 0): Envoy creates a
    filter's context when the request reaches it, so the failure takes effect there.
    """

    __slots__ = ()
    wants_request_body = True
    plan: Plan
    plugins: tuple[Plugin, ...]
    state: StreamState

    # --- driving one callback --------------------------------------------------------

    def _step(self, index: int, hook: Hook | None, *args: int) -> LocalReply | _Paused | None:
        """Call ``hook`` of filter ``index`` (None: not exported). None: go on to the next
        filter; a reply: stop; PAUSED: wait (``_paused``), then go on."""
        if self.off and index in self.off:
            return self._stopped(index, None)
        if hook is None:
            return None
        plugin = self.plugins[index]
        if plugin.closed:  # its Store is gone (Plugin.close): never call into it
            return self._stopped(index, WasmClosed(f"filter '{plugin.name}': VM closed"))
        plugin.current = self.state
        started = perf_counter()
        try:
            action: object = hook(self.contexts[index], *args)
        except WasmError as exc:
            action = exc
        plugin.observe_call(perf_counter() - started)
        stopped = self._stopped(index, action)
        if stopped is None:
            filter_metrics.outcome(plugin.name, filter_metrics.CONTINUE)
        return stopped

    def _stopped(self, index: int, result: object) -> LocalReply | _Paused | None:
        """What filter ``index`` answered (``_step``, ``_run``): None when it is
        off, the WasmError it raised, or its action."""
        if result is None:
            exc = self.off[index]
            return None if exc is None else self._failed(index, exc)
        if isinstance(result, WasmError):
            return self._failed(index, result)
        reply = self.state.local_reply
        if reply is None and result == _PAUSE:
            filter_metrics.outcome(self.plugins[index].name, filter_metrics.PAUSE)
            return PAUSED
        if reply is not None:
            filter_metrics.outcome(self.plugins[index].name, filter_metrics.REPLY)
        return reply

    async def _after_stop(
        self, index: int, result: object, hooks: tuple[Hook | None, ...], headers: Headers,
        pseudo: int, end_of_stream: bool, step: int,
    ) -> LocalReply | None:  # fmt: skip
        """The rest of a header phase that C stopped at filter ``index``:
        apply what the filter answered (wait if it paused), then run the filters after it
        (``step`` 1: the request, config order; -1: the response, reverse), each called
        with the map's size (its list plus ``pseudo``). Returns the reply that ended the
        phase, None when every filter went on."""
        stop = len(self.plugins) if step == 1 else -1
        while True:
            stopped = self._stopped(index, result)
            span = None  # tracing: a span for a filter that paused or replied
            if stopped is not None:
                span = filter_span(self.plugins[index].name, _HEADER_PHASES[step])
            # No coroutine per filter: only a pause needs one (``_paused``).
            reply = await self._paused(index) if stopped is PAUSED else stopped
            if span is not None:
                filter_ended(span, stopped is PAUSED, None if reply is None else reply.status)
            if reply is not None:
                if step == 1:
                    # The later filters never see this request: in Envoy their stream
                    # contexts are not created, so they get no response callbacks either.
                    self.off.update(dict.fromkeys(range(index + 1, stop)))
                return reply
            index, result = self._run(
                hooks, headers, pseudo, index + step, stop, step, end_of_stream
            )
            if index < 0:
                return None

    async def _paused(self, index: int) -> LocalReply | None:
        state = self.state
        loop = asyncio.get_running_loop()
        resume = state.resume = loop.create_future()
        # No timer of its own: wait_for would add a waiter future, a task step and
        # callbacks to every pause, a timer its heap entry (an http_call per request in
        # rate_limit's global mode; docs/benchmarks.md, the rate_limit filter alone).
        WATCH.add(loop, resume, PAUSE_TIMEOUT)
        try:
            await resume
        except TimeoutError:
            name = self.plugins[index].name
            return problem(504, f"filter '{name}' paused and never resumed")
        finally:
            WATCH.discard(resume)
            state.resume = None
        if state.failure is not None:  # a filter failed in its http_call response
            plugin, exc = state.failure
            state.failure = None
            failed = index if self.plugins[index] is plugin else self.plugins.index(plugin)
            return self._failed(failed, exc)
        if state.local_reply is not None:  # it replied once resumed (an http_call's answer)
            filter_metrics.outcome(self.plugins[index].name, filter_metrics.REPLY)
        return state.local_reply

    def _failed(self, index: int, exc: WasmError) -> LocalReply | None:
        plugin = self.plugins[index]
        policy = plugin.spec.on_error
        self.off[index] = None
        filter_metrics.outcome(plugin.name, filter_metrics.FAIL)
        if isinstance(exc, WasmVmFailed | WasmClosed):  # failed or replaced before, logged then
            log.debug("filter '%s' is failed (%s): %s", plugin.name, policy, exc)
        else:
            rid = request_id(self.state.ex.request_headers)
            log.error("filter '%s' failed (%s): %s request_id=%s", plugin.name, policy, exc, rid)
            self.plan.reload(plugin)  # on_trap: the guest stopped halfway, its state is suspect
        if policy == "fail_open":
            return None
        reply = problem(503, f"filter '{plugin.name}' failed", filter=plugin.name)
        self.state.local_reply = reply
        return reply

    # --- StreamFilters ---------------------------------------------------------------

    async def _encode_stopped(
        self, ex: Exchange, stopped: Awaitable[LocalReply | None]
    ) -> LocalReply | None:
        reply = await stopped
        return None if reply is None else await self._encode_local(ex, reply)

    async def _encode_local(self, ex: Exchange, reply: LocalReply) -> LocalReply:
        """A local reply sent while decoding passes through the response callbacks, as
        Envoy encodes it through the filter chain: a filter sees its own reply; a failed
        filter, or one the request never reached, does not (``off``)."""
        if self.state.encoding_local:
            return reply
        self.state.encoding_local = True
        self.state.local_reply = None
        ex.status, ex.response_headers = reply.status, list(reply.headers)
        pending = self.response_headers(ex, not reply.body)
        again = await pending if pending is not None else None
        if again is not None:
            return again
        body = reply.body
        if reply.body and self.wants_response_body:
            out = await self.response_body(ex, reply.body, True)
            if isinstance(out, LocalReply):
                return out
            body = out
        return LocalReply(ex.status, ex.response_headers, body)

    async def request_body(
        self, ex: Exchange, chunk: bytes, end_of_stream: bool
    ) -> bytes | LocalReply:
        buffer = self.state.body(True)
        buffer += chunk
        reply = await self._body(buffer, end_of_stream, True)
        return await self._encode_local(ex, reply) if isinstance(reply, LocalReply) else reply

    async def response_body(
        self, ex: Exchange, chunk: bytes, end_of_stream: bool
    ) -> bytes | LocalReply:
        buffer = self.state.body(False)
        buffer += chunk
        return await self._body(buffer, end_of_stream, False)

    async def _body(
        self, buffer: bytearray, end_of_stream: bool, request: bool
    ) -> bytes | LocalReply:
        """One body chunk (already appended to ``buffer``) through the filters, in config
        order for the request, reverse for the response; a filter pausing before the end
        buffers it (StopIterationAndBuffer) and is asked again, with the whole buffer, when
        more arrives. A reply is returned as sent: the caller decides how it is encoded."""
        count = len(self.plugins)
        order = range(count) if request else range(count - 1, -1, -1)
        if self._body_at is None:  # per direction (request: True), where a paused body resumes
            self._body_at = [None, None]
        resume = self._body_at[request]
        for index in order:
            if resume is not None and index != resume:
                continue  # filters before the one that paused already passed this data
            resume = None
            plugin = self.plugins[index]
            hook = plugin.on_request_body if request else plugin.on_response_body
            step = self._step(index, hook, len(buffer), end_of_stream)
            if step is PAUSED and not end_of_stream:
                self._body_at[request] = index
                return b""
            if step is not None:
                span = filter_span(plugin.name, _BODY_PHASES[request])  # tracing
                paused = step is PAUSED
                if step is PAUSED:
                    step = await self._paused(index)
                if span is not None:
                    filter_ended(span, paused, None if step is None else step.status)
                if step is not None:
                    return step
        self._body_at[request] = None
        out = bytes(buffer)
        buffer.clear()
        return out

    def _end_failed(self, failed: list[tuple[int, WasmError]]) -> None:
        """Filters that failed while their streams ended (``done``): nothing is left to
        apply a policy to."""
        rid = request_id(self.state.ex.request_headers)
        for index, exc in failed:
            plugin = self.plugins[index]
            log.error("filter '%s' failed at the end of a request: %s request_id=%s",
                      plugin.name, exc, rid)  # fmt: skip
            self.plan.reload(plugin)  # on_trap
