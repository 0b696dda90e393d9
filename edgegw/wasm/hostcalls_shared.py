"""The ``env.proxy_*`` hostcalls that reach beyond one request: shared data, shared
queues, metrics, http calls (proxy-wasm ABI v0.2.1). Same conventions as hostcalls.py."""

from __future__ import annotations

from edgegw.wasm.abi import Status, decode_pairs
from edgegw.wasm.hostcalls import BAD_ARGUMENT, NOT_FOUND, OK, Hostcalls, guarded
from edgegw.wasm.shared import METRICS, QUEUES, SHARED_DATA


class SharedHostcalls(Hostcalls):
    # --- shared data and queues --------------------------------------------------------

    # Keys and values are read by C (exports.py).

    @guarded
    def proxy_get_shared_data(self, key: bytes, ptr_ptr: int, size_ptr: int, cas_ptr: int) -> int:
        found = SHARED_DATA.get(key)
        if found is None:
            return NOT_FOUND
        status = self._return_bytes(found[0], ptr_ptr, size_ptr)
        self.memory.write_u32(cas_ptr, found[1])
        return status

    def proxy_set_shared_data(self, key: bytes, value: bytes, cas: int) -> int:
        return SHARED_DATA.set(key, value, cas)

    @guarded
    def proxy_register_shared_queue(self, name_ptr: int, name_size: int, id_ptr: int) -> int:
        name = self.memory.read(name_ptr, name_size)
        qid = QUEUES.register(self.vm_id, name, self.queue_ready)
        if qid is None:  # shared data table full: the same answer as a set
            return Status.INTERNAL_FAILURE
        self.memory.write_u32(id_ptr, qid)
        return OK

    @guarded
    def proxy_resolve_shared_queue(
        self, vm_ptr: int, vm_size: int, name_ptr: int, name_size: int, id_ptr: int
    ) -> int:
        qid = QUEUES.resolve(
            self.memory.read(vm_ptr, vm_size), self.memory.read(name_ptr, name_size)
        )
        if qid is None:
            return NOT_FOUND
        self.memory.write_u32(id_ptr, qid)
        return OK

    @guarded
    def proxy_enqueue_shared_queue(self, qid: int, ptr: int, size: int) -> int:
        return QUEUES.enqueue(qid, self.memory.read(ptr, size))

    @guarded
    def proxy_dequeue_shared_queue(self, qid: int, ptr_ptr: int, size_ptr: int) -> int:
        item = QUEUES.dequeue(qid)
        if isinstance(item, Status):
            return item
        return self._return_bytes(item, ptr_ptr, size_ptr)

    # --- metrics -----------------------------------------------------------------------

    @guarded
    def proxy_define_metric(self, kind: int, name_ptr: int, name_size: int, id_ptr: int) -> int:
        name = self.memory.read(name_ptr, name_size).decode(errors="replace")
        mid = METRICS.define(self.name, kind, name)
        if mid is None:
            return BAD_ARGUMENT
        self.memory.write_u32(id_ptr, mid)
        return OK

    def proxy_increment_metric(self, mid: int, offset: int) -> int:
        return METRICS.increment(mid, offset)

    def proxy_record_metric(self, mid: int, value: int) -> int:
        return METRICS.record(mid, value)

    @guarded
    def proxy_get_metric(self, mid: int, ptr: int) -> int:
        value = METRICS.get(mid)
        if value is None:
            return NOT_FOUND
        self.memory.write_u64(ptr, value)
        return OK

    # --- http calls ----------------------------------------------------------------------

    @guarded  # the token is written to a guest pointer; the strings are read by C
    def proxy_http_call(
        self,
        upstream: bytes,
        encoded_headers: bytes,
        body: bytes,
        _trailers_ptr: int,
        _trailers_size: int,
        timeout_ms: int,
        token_ptr: int,
    ) -> int:
        cluster = upstream.decode("latin-1")
        headers = decode_pairs(encoded_headers)
        if headers is None or cluster not in self.clusters:
            return BAD_ARGUMENT
        pseudo: dict[bytes, bytes] = {}
        others: list[tuple[bytes, bytes]] = []
        for k, v in headers:  # one pass: every filter http_call (rate_limit: per request)
            if k[:1] == b":":
                pseudo[k] = v
            else:
                others.append((k.lower(), v))
        authority = pseudo.get(b":authority")
        # Envoy requires these three (proxy-wasm spec: proxy_http_call); of :authority
        # only that it is there: an empty one is sent as an empty Host (as Envoy does;
        # RFC 9112 §3.2 allows it), not refused.
        if not (pseudo.get(b":method") and pseudo.get(b":path")) or authority is None:
            return BAD_ARGUMENT
        if not authority:  # an empty Host, not the cluster's default one
            others = [*((k, v) for k, v in others if k != b"host"), (b"host", b"")]
        token = self.dispatch_call(
            cluster,
            pseudo[b":method"].decode("latin-1"),
            pseudo[b":path"].decode("latin-1"),
            authority.decode("latin-1"),
            others,
            body,
            (timeout_ms or 5000) / 1000,
        )
        self.memory.write_u32(token_ptr, token)
        return OK

    def proxy_call_foreign_function(
        self, _name: bytes, _argument: bytes, _ptr_ptr: int, _size_ptr: int
    ) -> int:
        return NOT_FOUND  # none is registered

    def unimplemented(self, *_args: int) -> int:
        """gRPC calls and anything else edgegw does not offer."""
        return Status.UNIMPLEMENTED

    def noop(self, *_args: int) -> int:
        return OK
