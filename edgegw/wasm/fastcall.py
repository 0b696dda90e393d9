"""The hot path into and out of wasm: wasmtime's raw C API through wasmtime-py's ctypes.

wasmtime-py's ``Func.__call__`` costs ~58 µs and ``Linker.define_func`` host functions
~18.5 µs per call; ``wasmtime_func_call_unchecked`` / ``wasmtime_linker_define_func_unchecked``
cost ~2.4 µs / ~0.7 µs (DESIGN.md §1). Every raw C-API use of edgegw lives in this module;
it is tied to the pinned ``wasmtime`` version (pyproject.toml) and tests/test_wasm_fastcall.py
checks that this path is the one in use.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _bindings as ffi

from edgegw.errors import WasmDeadline, WasmTrap
from edgegw.wasm.engine import EPOCH

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
_VAL_WORDS = ctypes.sizeof(ffi.wasmtime_val_raw_t) // 8  # a raw value is 16 bytes


def _private(name: str, restype: Any, argtypes: Any) -> Any:
    # Our own function objects (CDLL[...] makes a new one each time). c_void_p results
    # are plain ints (no ctypes.cast per call). The per-request ones have no argtypes:
    # they are only ever given ready-made ctypes objects, which skips a from_param
    # conversion per argument (a guest call went from 1.4 to 0.5 µs).
    fn = ffi.dll[name]  # type: ignore[attr-defined]
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


_VP = ctypes.c_void_p
_call_unchecked = _private("wasmtime_func_call_unchecked", _VP, None)
_memory_data = _private("wasmtime_memory_data", _VP, None)
_memory_size = _private("wasmtime_memory_data_size", ctypes.c_size_t, None)
_set_deadline = _private("wasmtime_context_set_epoch_deadline", None, None)
#: (env, caller, args_and_results, count) -> trap pointer or 0
_HOST_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_size_t, _VP, _VP, _VP, ctypes.c_size_t)
_define_unchecked = _private(
    "wasmtime_linker_define_func_unchecked",
    _VP,
    [_VP, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, _VP,
     _HOST_CALLBACK, _VP, _VP],
)  # fmt: skip

#: Counts calls through this module; tests read it to prove the fast path is used.
CALLS = {"guest": 0, "host": 0}


def _error_message(err: int | None, trap: int | None) -> str:
    if err:
        return str(
            wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t)))
        )
    return wasmtime.Trap._from_ptr(ctypes.cast(trap or 0, ctypes.POINTER(ffi.wasm_trap_t))).message


class RawFunc:
    """A guest export called with i32/i64 arguments; ``call(*args)`` returns its first
    result (or 0) and raises WasmTrap / WasmDeadline."""

    __slots__ = ("_keep", "call", "name", "ticks")

    def __init__(
        self,
        store: wasmtime.Store,
        func: wasmtime.Func,
        name: str,
        ticks: int,
        deadline: list[int],
    ) -> None:
        ty = func.type(store)
        nresults = len(ty.results)
        count = max(len(ty.params), nresults, 1)
        buf = (ffi.wasmtime_val_raw_t * count)()
        # Arguments go in as 64-bit words (an i32 reads the low half): no union objects.
        words = (ctypes.c_uint64 * (_VAL_WORDS * count)).from_buffer(buf)
        # Every argument of the raw call is a ready ctypes object (see _private).
        ctx = _VP(ctypes.cast(store._context(), _VP).value)
        self._keep = (func._func, buf)  # what the pointers below point into
        funcref = ctypes.byref(func._func)
        n = ctypes.c_size_t(count)
        trap = _VP()
        trapref = ctypes.byref(trap)
        self.name = name
        self.ticks = ticks  # CPU deadline of one call, in epoch ticks
        counter = CALLS
        epoch = EPOCH
        stride = _VAL_WORDS

        # A closure, not a method: locals are the cheapest lookups in the hot path.
        def call(*args: int) -> int:
            i = 0
            for value in args:
                words[i] = value & MASK64
                i += stride
            counter["guest"] += 1
            # `deadline` is [epoch, ticks] of the store's current deadline, shared by its
            # functions: while the epoch has not moved, it still grants `ticks` in full.
            if deadline[0] != epoch[0] or deadline[1] != self.ticks:
                _set_deadline(ctx, ctypes.c_uint64(self.ticks))
                deadline[0], deadline[1] = epoch[0], self.ticks
            err = _call_unchecked(ctx, funcref, buf, n, trapref)
            if err or trap.value:
                message = _error_message(err, trap.value)
                trap.value = None
                if "interrupt" in message:  # epoch deadline reached
                    raise WasmDeadline(f"{name}: CPU deadline exceeded")
                raise WasmTrap(f"{name}: {message.splitlines()[0] if message else 'trap'}")
            return words[0] & MASK32 if nresults else 0

        self.call = call


def set_deadline(store: wasmtime.Store, ticks: int, deadline: list[int]) -> None:
    """Allow the next guest calls ``ticks`` epoch increments (epoch interruption)."""
    _set_deadline(_VP(ctypes.cast(store._context(), _VP).value), ctypes.c_uint64(ticks))
    deadline[0], deadline[1] = EPOCH[0], ticks


class Memory:
    """Bounds-checked access to a guest's linear memory, through a memoryview.

    The base never moves (the engine sets ``memory_may_move = False``) and memory only
    grows, so a cached size is never too large: an access beyond it first asks wasmtime
    for the current size, and only then is out of bounds.
    """

    __slots__ = ("_base", "_ctx", "_keep", "_mem", "_size", "_view")

    def __init__(self, store: wasmtime.Store, memory: wasmtime.Memory) -> None:
        self._ctx = _VP(ctypes.cast(store._context(), _VP).value)
        self._keep = memory._memory
        self._mem = ctypes.byref(memory._memory)
        self._base = _memory_data(self._ctx, self._mem) or 0
        self._size = -1
        self._view = memoryview(b"")
        self.refresh()

    def refresh(self) -> None:
        size = _memory_size(self._ctx, self._mem)
        if size != self._size:
            self._size = size
            array = (ctypes.c_char * size).from_address(self._base)
            self._view = memoryview(array).cast("B")

    def _check(self, ptr: int, end: int) -> None:
        self.refresh()
        if end > self._size:
            raise IndexError(f"guest memory access out of bounds: {ptr}+{end - ptr}")

    def read(self, ptr: int, size: int) -> bytes:
        ptr &= MASK32
        end = ptr + (size & MASK32)
        if end > self._size:
            self._check(ptr, end)
        return self._view[ptr:end].tobytes()

    def write(self, ptr: int, data: bytes) -> None:
        ptr &= MASK32
        end = ptr + len(data)
        if end > self._size:
            self._check(ptr, end)
        self._view[ptr:end] = data

    def read_u32(self, ptr: int) -> int:
        return int.from_bytes(self.read(ptr, 4), "little")

    def write_u32(self, ptr: int, value: int) -> None:
        self.write(ptr, (value & MASK32).to_bytes(4, "little"))

    def write_u64(self, ptr: int, value: int) -> None:
        self.write(ptr, (value & MASK64).to_bytes(8, "little"))


HostImpl = Callable[..., int]


def define_host_func(
    linker: wasmtime.Linker,
    module: str,
    name: str,
    ty: wasmtime.FuncType,
    impl: HostImpl,
) -> Any:
    """Define ``module.name`` with a raw callback calling ``impl(*int_args) -> int``.

    ``impl`` must not raise for bad guest input (it returns a status instead); an
    exception anyway becomes a trap in the guest, never a crash of the worker. Returns the
    ctypes callback, which the caller must keep alive as long as the linker and instances.
    """
    kinds = tuple(str(p) for p in ty.params)
    count = max(len(kinds), len(ty.results), 1)
    words_type = ctypes.c_uint64 * (_VAL_WORDS * count)
    has_result = bool(ty.results)
    masks = tuple(MASK64 if kind == "i64" else MASK32 for kind in kinds)
    stride = _VAL_WORDS
    calls = CALLS

    def callback(_env: Any, _caller: Any, args: int, _n: int) -> int:
        calls["host"] += 1
        try:
            words = words_type.from_address(args)
            result = impl(*[words[i * stride] & m for i, m in enumerate(masks)])
            if has_result:
                words[0] = result & MASK32
            return 0
        except BaseException as exc:  # must never unwind through C
            message = f"host function {name} failed: {type(exc).__name__}: {exc}".encode()
            trap = ffi.wasmtime_trap_new(ctypes.create_string_buffer(message), len(message))
            return ctypes.cast(trap, _VP).value or 0

    raw = _HOST_CALLBACK(callback)
    mod, nm = module.encode(), name.encode()
    linker_ptr = ctypes.cast(linker.ptr(), _VP).value
    type_ptr = ctypes.cast(ty.ptr(), _VP).value
    err = _define_unchecked(linker_ptr, mod, len(mod), nm, len(nm), type_ptr, raw, None, None)
    if err:
        raise wasmtime.WasmtimeError._from_ptr(
            ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t))
        )
    return raw
