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

MASK32 = 0xFFFFFFFF
_call_unchecked = ffi._wasmtime_func_call_unchecked
_memory_data = ffi._wasmtime_memory_data
_memory_size = ffi._wasmtime_memory_data_size
_set_deadline = ffi._wasmtime_context_set_epoch_deadline
_define_unchecked = ffi._wasmtime_linker_define_func_unchecked
_string_at = ctypes.string_at
_memmove = ctypes.memmove

#: Counts calls through this module; tests read it to prove the fast path is used.
CALLS = {"guest": 0, "host": 0}


def _error_message(err: Any, trap: Any) -> str:
    if err:
        return str(wasmtime.WasmtimeError._from_ptr(err))
    return wasmtime.Trap._from_ptr(trap).message


class RawFunc:
    """A guest export called with i32/i64 arguments; returns its first result (or 0)."""

    __slots__ = ("_buf", "_ctx", "_func", "_kinds", "_n", "_nresults", "_trap", "_trapref", "name")

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func, name: str) -> None:
        ty = func.type(store)
        self._kinds = tuple(str(p) for p in ty.params)
        self._nresults = len(ty.results)
        self._n = max(len(ty.params), self._nresults, 1)
        self._buf = (ffi.wasmtime_val_raw_t * self._n)()
        self._ctx = store._context()
        self._func = ctypes.byref(func._func)
        self._trap = ctypes.POINTER(ffi.wasm_trap_t)()
        self._trapref = ctypes.byref(self._trap)
        self.name = name

    def __call__(self, *args: int) -> int:
        buf = self._buf
        for i, value in enumerate(args):
            if self._kinds[i] == "i64":
                buf[i].i64 = value
            else:
                buf[i].i32 = value
        CALLS["guest"] += 1
        err = _call_unchecked(self._ctx, self._func, buf, self._n, self._trapref)
        if err or self._trap:
            message = _error_message(err, self._trap)
            self._trap = ctypes.POINTER(ffi.wasm_trap_t)()
            self._trapref = ctypes.byref(self._trap)
            if "interrupt" in message:  # epoch deadline reached
                raise WasmDeadline(f"{self.name}: CPU deadline exceeded")
            raise WasmTrap(f"{self.name}: {message.splitlines()[0] if message else 'trap'}")
        return int(buf[0].i32) & MASK32 if self._nresults else 0


def set_deadline(store: wasmtime.Store, ticks: int) -> None:
    """Allow the next guest call ``ticks`` epoch increments (epoch interruption)."""
    _set_deadline(store._context(), ticks)


class Memory:
    """Bounds-checked access to a guest's linear memory (its base moves when it grows)."""

    __slots__ = ("_ctx", "_mem")

    def __init__(self, store: wasmtime.Store, memory: wasmtime.Memory) -> None:
        self._ctx = store._context()
        self._mem = ctypes.byref(memory._memory)

    def _span(self, ptr: int, size: int) -> int:
        ptr &= MASK32
        size &= MASK32
        if ptr + size > _memory_size(self._ctx, self._mem):
            raise IndexError(f"guest memory access out of bounds: {ptr}+{size}")
        base = ctypes.cast(_memory_data(self._ctx, self._mem), ctypes.c_void_p).value or 0
        return base + ptr

    def read(self, ptr: int, size: int) -> bytes:
        if size == 0:
            return b""
        return _string_at(self._span(ptr, size), size & MASK32)

    def write(self, ptr: int, data: bytes) -> None:
        if data:
            _memmove(self._span(ptr, len(data)), data, len(data))

    def read_u32(self, ptr: int) -> int:
        return int.from_bytes(self.read(ptr, 4), "little")

    def write_u32(self, ptr: int, value: int) -> None:
        self.write(ptr, (value & MASK32).to_bytes(4, "little"))

    def write_u64(self, ptr: int, value: int) -> None:
        self.write(ptr, (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))


HostImpl = Callable[..., int]
_CALLBACK = ffi.wasmtime_func_unchecked_callback_t
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)()  # a NULL function pointer


def define_host_func(
    linker: wasmtime.Linker, module: str, name: str, ty: wasmtime.FuncType, impl: HostImpl
) -> Any:
    """Define ``module.name`` with a raw callback calling ``impl(*int_args) -> int``.

    ``impl`` must not raise for bad guest input (it returns a status instead); an exception
    anyway becomes a trap in the guest, never a crash of the worker. Returns the ctypes
    callback, which the caller must keep alive as long as the linker and instances.
    """
    kinds = tuple(str(p) for p in ty.params)
    has_result = bool(ty.results)

    def callback(_env: Any, _caller: Any, args: Any, _n: int) -> int:
        CALLS["host"] += 1
        try:
            values = [
                args[i].i64 if kind == "i64" else args[i].i32 & MASK32
                for i, kind in enumerate(kinds)
            ]
            result = impl(*values)
            if has_result:
                args[0].i32 = result
            return 0
        except BaseException as exc:
            message = f"host function {name} failed: {type(exc).__name__}: {exc}".encode()
            trap = ffi.wasmtime_trap_new(ctypes.create_string_buffer(message), len(message))
            return ctypes.cast(trap, ctypes.c_void_p).value or 0

    raw = _CALLBACK(callback)
    mod, nm = module.encode(), name.encode()
    err = _define_unchecked(
        linker.ptr(), mod, len(mod), nm, len(nm), ty.ptr(), raw, None, _NO_FINALIZER
    )
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)
    return raw
