"""The hot path into and out of wasm: wasmtime's raw C API, called from C.

wasmtime-py's ``Func.__call__`` and ``Linker.define_func`` cost tens of microseconds per
call, and the same raw calls made through ctypes were still dominated by ctypes and
libffi; the C extension ``_native`` makes them directly (docs/design.md §1 and
docs/architecture.md have the decision, docs/benchmarks.md the figures, and
bench/wasm_calls.py prints the three paths side by side). Every raw C-API use of
edgegw lives in this module and ``native/call.c`` / ``native/host.c``; it is tied to the
pinned ``wasmtime`` version (pyproject.toml) and tests/unit/test_wasm_fastcall.py checks
that this path is the one in use.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any, NoReturn

import wasmtime
from wasmtime import _bindings as ffi

from edgegw.errors import WasmDeadline, WasmTrap
from edgegw.wasm import _native
from edgegw.wasm._native import Func as RawFunc
from edgegw.wasm._native import Host

__all__ = ["Host", "Memory", "RawFunc", "calls", "define_host_func", "raw_func", "set_deadline"]

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
_VP = ctypes.c_void_p


def _address(name: str) -> int:
    return ctypes.cast(ffi.dll[name], _VP).value or 0  # type: ignore[attr-defined]


def _private(name: str, restype: Any, argtypes: Any) -> Any:
    # Our own function objects (CDLL[...] makes a new one each time): c_void_p results
    # are plain ints.
    fn = ffi.dll[name]  # type: ignore[attr-defined]
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


_HOST_CALLBACK = _native.init(
    _address("wasmtime_func_call_unchecked"),
    _address("wasmtime_context_set_epoch_deadline"),
    _address("wasmtime_trap_new"),
    _address("wasmtime_engine_increment_epoch"),
    _address("wasmtime_memory_data"),
    _address("wasmtime_memory_data_size"),
    _address("wasmtime_trap_code"),
    wasmtime.TrapCode.INTERRUPT.value,
)
_memory_data = _private("wasmtime_memory_data", _VP, None)
_memory_size = _private("wasmtime_memory_data_size", ctypes.c_size_t, None)
_define_unchecked = _private(
    "wasmtime_linker_define_func_unchecked",
    _VP,
    [_VP, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, _VP,
     _VP, _VP, _VP],
)  # fmt: skip


def calls() -> tuple[int, int]:
    """(guest calls, hostcalls) made through the fast path; tests read it to prove it
    is the one in use."""
    return _native.counts()


def _context(store: wasmtime.Store) -> int:
    return ctypes.cast(store._context(), _VP).value or 0


def _raise_error(name: str, deadline: bool, err: int, trap: int) -> NoReturn:
    """A guest call failed: ``_native`` classified it by wasmtime's trap code
    (``deadline``: the epoch deadline, limits.cpu), never by the message, which quotes
    guest function names. Taking ownership of the error or trap frees it."""
    if err:
        error = ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t))
        message = str(wasmtime.WasmtimeError._from_ptr(error))
    else:
        message = wasmtime.Trap._from_ptr(
            ctypes.cast(trap, ctypes.POINTER(ffi.wasm_trap_t))
        ).message
    if deadline:
        raise WasmDeadline(f"{name}: CPU deadline exceeded")
    raise WasmTrap(f"{name}: {message.splitlines()[0] if message else 'trap'}")


def raw_func(store: wasmtime.Store, func: wasmtime.Func, name: str, ticks: int) -> RawFunc:
    """``func`` as a fast callable: ``f(*int_args)`` returns its first result (or 0),
    raises WasmTrap / WasmDeadline, and allows each call ``f.ticks`` epoch ticks (a call
    made while another one into ``store`` runs shares that one's deadline)."""
    ty = func.type(store)
    return RawFunc(
        _context(store),
        ctypes.addressof(func._func),
        (store, func._func),  # the context pointer is the store's: it must outlive us
        len(ty.params),
        len(ty.results),
        ticks,
        name,
        _raise_error,
    )


def set_deadline(store: wasmtime.Store, ticks: int) -> None:
    """Allow guest code run through wasmtime-py's public API ``ticks`` epoch increments."""
    _native.set_deadline(_context(store), ticks)


def start_ticker(engine: wasmtime.Engine, interval: float) -> None:
    """Increment ``engine``'s epoch every ``interval`` seconds from a native thread
    (once per process; a forked child starts its own)."""
    ptr = ctypes.cast(engine.ptr(), _VP).value or 0
    _native.start_ticker(ptr, engine, round(interval * 1e9))


class Memory:
    """Bounds-checked access to a guest's linear memory, through a memoryview.

    The base never moves (the engine sets ``memory_may_move = False``) and memory only
    grows, so a cached size is never too large: an access beyond it first asks wasmtime
    for the current size, and only then is out of bounds.
    """

    __slots__ = ("_base", "_ctx", "_keep", "_mem", "_owner", "_size", "_view")

    def __init__(self, store: wasmtime.Store, memory: wasmtime.Memory) -> None:
        self._ctx = _VP(_context(store))
        self._keep = memory._memory
        # What the C objects given our pointers hold: the store their context is.
        self._owner = (store, memory._memory)
        self._mem = ctypes.byref(memory._memory)
        self._base = _memory_data(self._ctx, self._mem) or 0
        self._size = -1
        self._view = memoryview(b"")
        self.refresh()

    def attach(self, host: Host) -> None:
        """Let ``host`` read its string arguments from this memory."""
        host.set_memory(self._ctx.value or 0, ctypes.addressof(self._keep), self._owner)

    def answerer(self, alloc: Callable[[int], int]) -> Callable[[bytes, int, int], int]:
        """``answer(data, ptr_ptr, size_ptr) -> status``, in C: ``data`` copied into this
        memory from the guest's allocator ``alloc`` (none for b""), its address and size
        written at the two pointers; OK, or INVALID_MEMORY_ACCESS (a pointer out of bounds,
        the allocator answered 0 or memory ``data`` does not fit in)."""
        return _native.Answer(
            self._ctx.value or 0, ctypes.addressof(self._keep), self._owner, alloc
        )

    def close(self) -> None:
        """The Store is about to be freed: every later access is out of bounds (an
        IndexError, INVALID_MEMORY_ACCESS to a guest), none touches freed memory."""
        self._ctx = _VP(0)
        self._size = 0
        self._view = memoryview(b"")

    def refresh(self) -> None:
        if not self._ctx.value:  # closed
            return
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
    strings: tuple[int, ...] = (),
    lower_first: bool = False,
    signed: tuple[int, ...] = (),
) -> Host:
    """Define ``module.name`` as a raw host function calling ``impl(*args) -> int``.

    The arguments are the guest's ints, except that each (pointer, length) pair starting
    at a position in ``strings`` arrives as the bytes it points to, the first one
    ASCII-lowercased with ``lower_first`` (a header name); out of bounds, the guest gets
    INVALID_MEMORY_ACCESS without ``impl`` being called. Such a host reads memory once
    ``Memory.attach`` gave it one. The parameters at the positions in ``signed`` arrive
    as signed ints (two's complement), the others unsigned. ``impl`` must not raise for
    bad guest input (it returns a status instead); an exception anyway becomes a trap in
    the guest, never a crash of the worker. Returns the callback's env, which the caller
    must keep alive as long as the linker and instances.
    """
    is64 = [str(p) == "i64" for p in ty.params]
    host = _native.Host(impl, name, is64, bool(ty.results), strings, lower_first, signed)
    mod, nm = module.encode(), name.encode()
    linker_ptr = ctypes.cast(linker.ptr(), _VP).value
    type_ptr = ctypes.cast(ty.ptr(), _VP).value
    err = _define_unchecked(
        linker_ptr, mod, len(mod), nm, len(nm), type_ptr, _HOST_CALLBACK, host.address, None
    )
    if err:
        raise wasmtime.WasmtimeError._from_ptr(
            ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t))
        )
    return host
