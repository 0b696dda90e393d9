"""One request through a route's proxy-wasm filters (``edgegw.chain.StreamFilters``).

Order as Envoy shows it: request phases run in config order, response phases in
reverse; a filter returning Pause stops the iteration until it continues (e.g. after its
http_call) or replies. A failing filter follows its ``on_error`` policy and is not called
again for that request (Envoy never calls a failed VM again). A local or failure reply
sent in the request direction goes through the response callbacks of the filters the
request reached (Envoy's ``sendLocalReply``), in reverse order.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import Final

from edgegw.chain import Exchange, LocalReply
from edgegw.errors import WasmError
from edgegw.problem import problem
from edgegw.wasm.abi import Action
from edgegw.wasm.plugin import Plugin
from edgegw.wasm.state import StreamState

log = logging.getLogger("edgegw.wasm")

PAUSE_TIMEOUT = 30.0  # a filter that paused and never resumed fails the request


class _Paused(enum.Enum):
    """The marker ``Chain._step`` returns when a filter paused the stream."""

    PAUSED = enum.auto()


PAUSED: Final = _Paused.PAUSED  # `step is PAUSED` narrows the type for mypy
_PAUSE = int(Action.PAUSE)  # an IntEnum member lookup costs ~0.2 µs on Python 3.11


class Chain:
    """The filters of one request; built by ``WasmRuntime.start``."""

    def __init__(
        self,
        plugins: tuple[Plugin, ...],
        ex: Exchange,
        reload: Callable[[Plugin], None],
        wants_response_body: bool,
    ) -> None:
        self.state = state = StreamState(ex)
        self.plugins = plugins
        self.reload = reload
        self.wants_request_body = True
        self.wants_response_body = wants_response_body
        # Filters not called again in this request (index -> None): failed ones, and those
        # the request never reached because an earlier filter replied. A context whose
        # creation failed maps to its error: Envoy creates a filter's context when the
        # request reaches it, so the failure takes effect there (``_step``).
        self.off: dict[int, WasmError | None] = {}
        # Per direction (request: True), the filter a paused body resumes at.
        self._body_at: dict[bool, int | None] = {True: None, False: None}
        self.contexts: list[int] = []
        for index, plugin in enumerate(plugins):
            try:
                self.contexts.append(plugin.new_context(state))
            except WasmError as exc:
                self.contexts.append(0)
                self.off[index] = exc

    # --- driving one callback --------------------------------------------------------

    def _step(
        self, index: int, hook: Callable[..., int] | None, *args: int
    ) -> LocalReply | _Paused | None:
        """Call ``hook`` of filter ``index`` (None: not exported). None: go on to the next
        filter; a reply: stop; PAUSED: wait (``_paused``), then go on."""
        off = self.off
        if off and index in off:
            exc = off[index]
            return None if exc is None else self._failed(index, exc)
        if hook is None:
            return None
        state = self.state
        self.plugins[index].current = state
        try:
            action = hook(self.contexts[index], *args)
        except WasmError as exc:
            return self._failed(index, exc)
        if state.local_reply is None and action == _PAUSE:
            return PAUSED
        return state.local_reply

    async def _paused(self, index: int) -> LocalReply | None:
        state = self.state
        if not await self._wait():
            name = self.plugins[index].name
            return problem(504, f"filter '{name}' paused and never resumed")
        if state.failure is not None:  # a filter failed in its http_call response
            plugin, exc = state.failure
            state.failure = None
            failed = index if self.plugins[index] is plugin else self.plugins.index(plugin)
            return self._failed(failed, exc)
        return state.local_reply

    async def _wait(self) -> bool:
        state = self.state
        state.resume = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(state.resume, PAUSE_TIMEOUT)
        except TimeoutError:
            return False
        finally:
            state.resume = None
        return True

    def _failed(self, index: int, exc: WasmError) -> LocalReply | None:
        plugin = self.plugins[index]
        policy = plugin.spec.on_error
        log.error("filter '%s' failed (%s): %s", plugin.name, policy, exc)
        self.off[index] = None
        if policy == "fail_open":
            return None
        if policy == "reload":
            self.reload(plugin)
        reply = problem(503, f"filter '{plugin.name}' failed", filter=plugin.name)
        self.state.local_reply = reply
        return reply

    # --- StreamFilters ---------------------------------------------------------------

    async def request_headers(self, ex: Exchange, end_of_stream: bool) -> LocalReply | None:
        request_map = self.state.request_map
        for index, plugin in enumerate(self.plugins):
            # No coroutine per filter: only a pause needs one (``_paused``).
            step = self._step(index, plugin.on_request_headers, request_map.size(), end_of_stream)
            reply = await self._paused(index) if step is PAUSED else step
            if reply is not None:
                # The later filters never see this request: in Envoy their stream contexts
                # are not created, so they get no response callbacks either.
                self.off.update(dict.fromkeys(range(index + 1, len(self.plugins))))
                return await self._encode_local(ex, reply)
        return None

    async def _encode_local(self, ex: Exchange, reply: LocalReply) -> LocalReply:
        """A local reply sent while decoding passes through the response callbacks, as
        Envoy encodes it through the filter chain: a filter sees its own reply; a failed
        filter, or one the request never reached, does not (``off``)."""
        if self.state.encoding_local:
            return reply
        self.state.encoding_local = True
        self.state.local_reply = None
        ex.status, ex.response_headers = reply.status, list(reply.headers)
        again = await self.response_headers(ex, not reply.body)
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
        self.state.request_body += chunk
        reply = await self._body(self.state.request_body, end_of_stream, True)
        return await self._encode_local(ex, reply) if isinstance(reply, LocalReply) else reply

    async def response_headers(self, ex: Exchange, end_of_stream: bool) -> LocalReply | None:
        response_map = self.state.response_map
        plugins = self.plugins
        for index in range(len(plugins) - 1, -1, -1):
            hook = plugins[index].on_response_headers
            step = self._step(index, hook, response_map.size(), end_of_stream)
            reply = await self._paused(index) if step is PAUSED else step
            if reply is not None:
                return reply
        return None

    async def response_body(
        self, ex: Exchange, chunk: bytes, end_of_stream: bool
    ) -> bytes | LocalReply:
        self.state.response_body += chunk
        return await self._body(self.state.response_body, end_of_stream, False)

    async def _body(
        self, buffer: bytearray, end_of_stream: bool, request: bool
    ) -> bytes | LocalReply:
        """One body chunk (already appended to ``buffer``) through the filters, in config
        order for the request, reverse for the response; a filter pausing before the end
        buffers it (StopIterationAndBuffer) and is asked again, with the whole buffer, when
        more arrives. A reply is returned as sent: the caller decides how it is encoded."""
        count = len(self.plugins)
        order = range(count) if request else range(count - 1, -1, -1)
        resume = self._body_at[request]
        for index in order:
            if resume is not None and index != resume:
                continue  # filters before the one that paused already passed this data
            resume = None
            plugin = self.plugins[index]
            hook = plugin.on_request_body if request else plugin.on_response_body
            step = self._step(index, hook, len(buffer), end_of_stream)
            if step is PAUSED:
                if not end_of_stream:
                    self._body_at[request] = index
                    return b""
                step = await self._paused(index)
            if step is not None:
                return step
        self._body_at[request] = None
        out = bytes(buffer)
        buffer.clear()
        return out

    def done(self, ex: Exchange) -> None:
        state = self.state
        state.done = True
        state.wake()
        for index, plugin in enumerate(self.plugins):
            context = self.contexts[index]
            if not context or plugin.closed:
                continue
            plugin.current = state
            try:
                for hook in plugin.on_end:
                    hook(context)
            except WasmError as exc:
                log.error("filter '%s' failed at the end of a request: %s", plugin.name, exc)
            finally:
                plugin.release(context)
