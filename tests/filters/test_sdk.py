"""The Zig SDK under a minimal proxy-wasm host written here with wasmtime: errors are
values (a malformed host answer becomes a 500 reply, not a trap) and the allocator does
not spend a 64 KiB page per allocation."""

from __future__ import annotations

import shutil
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import wasmtime

from edgegw.filterbuild import build_all
from tests.conftest import GatewayProcess
from tests.filters.harness import Backend, Handler, echo_handler

REPO = Path(__file__).resolve().parents[2]

PROBE = """
const std = @import("std");
const pw = @import("proxy_wasm");
pub const panic = pw.panic;
const Root = struct {
    pub const Http = Stream;
    pub fn onConfigure(self: *Root, size: usize) !bool {
        _ = self;
        return std.mem.eql(u8, try pw.pluginConfiguration(size), "ok");
    }
};
const Stream = struct {
    pub fn init(root: *Root, id: u32) Stream { _ = root; _ = id; return .{}; }
    pub fn onRequestHeaders(self: *Stream, n: usize, eos: bool) !pw.Action {
        _ = self; _ = n; _ = eos;
        const pairs = try pw.request_headers.pairs();
        var total: usize = 0;
        for (pairs) |h| total += h.name.len + h.value.len;
        try pw.request_headers.replace("x-n", pw.fmt("{d}/{d}", .{ pairs.len, total }));
        return .@"continue";
    }
};
comptime { pw.plugin(Root); }
"""


# A stream context of 128 KiB: a VM capped at 2 MiB (17 pages at start) holds only a few.
FAT = """
const pw = @import("proxy_wasm");
pub const panic = pw.panic;
const Root = struct {
    pub const Http = Stream;
};
const Stream = struct {
    pad: [128 * 1024]u8 = undefined,
    pub fn init(root: *Root, id: u32) Stream { _ = root; _ = id; return .{}; }
    pub fn onRequestHeaders(self: *Stream, n: usize, eos: bool) !pw.Action {
        _ = self; _ = n; _ = eos;
        try pw.request_headers.replace("x-context", "yes");
        return .@"continue";
    }
};
comptime { pw.plugin(Root); }
"""


# Zig analyses only what is referenced: this forces every non-generic SDK function (and a
# few generic ones) through the compiler so no API is broken while no filter uses it.
EVERYTHING = """
const std = @import("std");
const pw = @import("proxy_wasm");
pub const panic = pw.panic;
const Root = struct {
    pub const Http = Stream;
};
const Stream = struct {
    pub fn init(root: *Root, id: u32) Stream {
        _ = root;
        _ = id;
        return .{};
    }
    pub fn onRequestHeaders(self: *Stream, n: usize, eos: bool) !pw.Action {
        _ = self;
        _ = n;
        _ = eos;
        pw.log(.info, "{d}", .{1});
        _ = try pw.json.parse(struct { a: u32 = 0 }, "{}");
        _ = try pw.json.parseScratch(struct { a: u32 = 0 }, "{}");
        _ = try pw.json.stringify(.{ .a = 1 });
        return .@"continue";
    }
};
comptime {
    pw.plugin(Root);
    const spaces = .{ pw.host, pw.shared, pw.util, pw.util.json, pw.memory, pw };
    for (spaces ++ .{ pw.request_headers, pw.Metric }) |ns| {
        for (std.meta.declarations(ns)) |name| {
            const T = @TypeOf(@field(ns, name));
            const plain = @typeInfo(T) == .@"fn" and !@typeInfo(T).@"fn".is_generic;
            if (plain and !std.mem.eql(u8, name, "exportAll")) _ = &@field(ns, name);
        }
    }
}
"""


def encode_map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    out = struct.pack("<I", len(pairs))
    out += b"".join(struct.pack("<II", len(k), len(v)) for k, v in pairs)
    return out + b"".join(k + b"\0" + v + b"\0" for k, v in pairs)


class MiniHost:
    """Just enough of a proxy-wasm host for the probe filter."""

    def __init__(self, wasm: Path) -> None:
        self.engine = wasmtime.Engine()
        self.store = wasmtime.Store(self.engine)
        module = wasmtime.Module.from_file(self.engine, str(wasm))
        linker = wasmtime.Linker(self.engine)
        self.config = b""
        self.headers = b""
        self.calls: list[tuple[str, Any]] = []
        handlers: dict[str, Callable[..., int]] = {
            "proxy_get_buffer_bytes": self._get_buffer,
            "proxy_get_header_map_pairs": self._get_pairs,
            "proxy_replace_header_map_value": self._replace,
            "proxy_send_local_response": self._local_response,
            "proxy_log": self._log,
        }
        for imp in module.imports:
            assert imp.module == "env", imp.module
            handler = handlers.get(imp.name or "", lambda *_a: 12)  # UNIMPLEMENTED
            assert isinstance(imp.type, wasmtime.FuncType)
            linker.define_func("env", imp.name or "", imp.type, handler)
        self.instance = linker.instantiate(self.store, module)
        exports = self.instance.exports(self.store)
        memory = exports["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self.memory = memory

    def call(self, name: str, *args: int) -> Any:
        fn = self.instance.exports(self.store)[name]
        assert isinstance(fn, wasmtime.Func)
        return fn(self.store, *args)

    def _give(self, data: bytes, ret_ptr: int, ret_len: int) -> int:
        ptr = self.call("proxy_on_memory_allocate", len(data)) & 0xFFFFFFFF if data else 0
        if data:
            self.memory.write(self.store, data, ptr)
        # Two out-parameters, each at its own address (the ABI says nothing of their layout).
        self.memory.write(self.store, struct.pack("<I", ptr), ret_ptr & 0xFFFFFFFF)
        self.memory.write(self.store, struct.pack("<I", len(data)), ret_len & 0xFFFFFFFF)
        return 0

    def _str(self, ptr: int, n: int) -> bytes:
        p = ptr & 0xFFFFFFFF
        return bytes(self.memory.read(self.store, p, p + (n & 0xFFFFFFFF)))

    def _get_buffer(self, t: int, start: int, size: int, rp: int, rl: int) -> int:
        return self._give(self.config, rp, rl) if t == 7 else 1

    def _get_pairs(self, t: int, rp: int, rl: int) -> int:
        return self._give(self.headers, rp, rl)

    def _replace(self, t: int, kp: int, kl: int, vp: int, vl: int) -> int:
        self.calls.append(("replace", (self._str(kp, kl), self._str(vp, vl))))
        return 0

    def _local_response(self, status: int, *args: int) -> int:
        self.calls.append(("local", status))
        return 0

    def _log(self, level: int, ptr: int, n: int) -> int:
        self.calls.append(("log", self._str(ptr, n)))
        return 0

    def pages(self) -> int:
        return int(self.memory.size(self.store))


def build_with_sdk(tmp_path_factory: pytest.TempPathFactory, name: str, source: str) -> Path:
    src = tmp_path_factory.mktemp("src") / "filters"
    shutil.copytree(REPO / "filters" / "sdk", src / "sdk")
    (src / name).mkdir()
    (src / name / "main.zig").write_text(source)
    [wasm] = build_all(src, src / "dist", progress=lambda _m: None)
    return wasm


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_with_sdk(tmp_path_factory, "probe", PROBE)


def start(probe: Path, config: bytes = b"ok") -> MiniHost:
    host = MiniHost(probe)
    host.config = config
    host.call("proxy_on_context_create", 1, 0)
    assert host.call("proxy_on_configure", 1, len(config)) == (1 if config == b"ok" else 0)
    return host


def test_exports_and_configure(probe: Path) -> None:
    host = start(probe)
    assert host.pages() >= 1
    start(probe, b"nope")  # configure returns false, no trap


def test_headers_roundtrip_and_malformed_map_is_a_500_not_a_trap(probe: Path) -> None:
    host = start(probe)
    host.headers = encode_map([(b":path", b"/x"), (b"a", b"bc")])
    host.call("proxy_on_context_create", 2, 1)
    assert host.call("proxy_on_request_headers", 2, 2, 1) == 0
    assert ("replace", (b"x-n", b"2/10")) in host.calls
    host.calls.clear()
    host.headers = struct.pack("<I", 1000) + b"\x05\x00\x00\x00"  # claims 1000 pairs
    host.call("proxy_on_context_create", 3, 1)
    assert host.call("proxy_on_request_headers", 3, 1000, 1) == 0
    assert ("local", 500) in host.calls
    assert any(c[0] == "log" and b"ParseFailure" in c[1] for c in host.calls)
    for ctx in (2, 3):
        host.call("proxy_on_done", ctx)
        host.call("proxy_on_log", ctx)
        host.call("proxy_on_delete", ctx)


def test_small_allocations_share_pages_and_scratch_is_reused(probe: Path) -> None:
    host = start(probe)
    before = host.pages()
    for _ in range(2000):
        assert host.call("proxy_on_memory_allocate", 48) & 0xFFFFFFFF != 0
    # A page-per-allocation allocator would need ~2000 pages here.
    assert host.pages() - before < 16  # ~96 KB of data; arena growth may double it twice
    host.headers = encode_map([(b"k" * 100, b"v" * 1000)] * 20)
    for ctx in range(10, 60):  # 50 requests: scratch memory is released after each one
        host.call("proxy_on_context_create", ctx, 1)
        host.call("proxy_on_request_headers", ctx, 20, 1)
        host.call("proxy_on_delete", ctx)
        if ctx == 11:
            steady = host.pages()
    assert host.pages() == steady


def test_every_sdk_function_compiles(tmp_path: Path) -> None:
    src = tmp_path / "filters"
    shutil.copytree(REPO / "filters" / "sdk", src / "sdk")
    (src / "everything").mkdir()
    (src / "everything" / "main.zig").write_text(EVERYTHING)
    [wasm] = build_all(src, tmp_path / "dist", progress=lambda _m: None)
    # Compiling is the check (unused code is then dropped by the linker); it must load too.
    wasmtime.Module.from_file(wasmtime.Engine(), str(wasm))


STREAM_CALLBACKS = [
    ("proxy_on_request_headers", (1, 1)),
    ("proxy_on_request_body", (10, 1)),
    ("proxy_on_request_trailers", (1,)),
    ("proxy_on_response_headers", (1, 1)),
    ("proxy_on_response_body", (10, 1)),
    ("proxy_on_response_trailers", (1,)),
]


@pytest.mark.parametrize(("callback", "args"), STREAM_CALLBACKS)
def test_a_stream_without_context_traps_instead_of_continuing(
    probe: Path, callback: str, args: tuple[int, ...]
) -> None:
    """A stream whose context could not be created (out of memory) must not pass as if
    the filter had let it through: the callback traps, so the host's failure policy
    decides (edgegw on_error, Envoy fail_open), and the VM keeps serving afterwards."""
    host = start(probe)
    with pytest.raises(wasmtime.Trap):
        host.call(callback, 77, *args)  # context 77 was never created
    assert any(
        kind == "log" and b"stream context 77 does not exist" in msg for kind, msg in host.calls
    )
    # The trap left no callback open: scratch memory is still released after each one.
    host.headers = encode_map([(b"k" * 100, b"v" * 1000)] * 20)
    for ctx in range(10, 40):
        host.call("proxy_on_context_create", ctx, 1)
        assert host.call("proxy_on_request_headers", ctx, 20, 1) == 0
        host.call("proxy_on_delete", ctx)
        if ctx == 11:
            steady = host.pages()
    assert host.pages() == steady


def test_a_stream_context_that_cannot_be_created_fails_the_request(
    tmp_path_factory: pytest.TempPathFactory,
    run_gateway: Callable[..., GatewayProcess],
    backend_factory: Callable[[Handler], Backend],
) -> None:
    """In edgegw's host, with the VM at its memory limit: streams held open at the
    backend fill it until the next stream's context cannot be created. That request must
    fail (on_error fail_closed: 503), never reach the backend without the filter."""
    fat = build_with_sdk(tmp_path_factory, "fat", FAT)
    release = threading.Event()
    arrived: list[dict[str, str]] = []

    def hold(
        method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        arrived.append(headers)
        release.wait(60)
        return echo_handler(method, path, headers, body)

    backend = backend_factory(hold)
    gw = run_gateway({
        "access_log": False,
        "backends": {"api": {"url": f"http://127.0.0.1:{backend.port}"}},
        # on_trap: keep: the held streams finish on the VM that trapped (the default,
        # reload, would close it and fail them too, as Envoy fails a whole VM).
        "filters": {"fat": {"wasm": str(fat), "limits": {"memory": "2MiB"}, "on_trap": "keep"}},
        "routes": [{"name": "r", "match": {"prefix": "/"}, "filters": ["fat"], "backend": "api"}],
    })  # fmt: skip
    held: list[Future[httpx.Response]] = []
    failed = None
    with ThreadPoolExecutor(max_workers=32) as pool:
        try:
            for n in range(1, 32):  # 2 MiB hold a handful of 128 KiB contexts
                held.append(pool.submit(httpx.get, gw.url + "/hold", timeout=60))
                while len(arrived) < n and not held[-1].done():
                    release.wait(0.01)
                if held[-1].done():  # answered without reaching the backend
                    failed = held.pop().result()
                    break
                assert arrived[-1].get("x-context") == "yes", "passed without its filter"
        finally:
            release.set()
        answers = [f.result() for f in held]
    assert failed is not None, "the VM never ran out of memory"
    assert failed.status_code == 503
    assert failed.json()["filter"] == "fat"
    assert len(answers) >= 1 and all(r.status_code == 200 for r in answers)
    # The held streams ended and freed their contexts: the filter serves again.
    again = httpx.get(gw.url + "/again", timeout=10)
    assert again.status_code == 200 and again.json()["headers"]["x-context"] == "yes"
    assert "stream context" in gw.output()
