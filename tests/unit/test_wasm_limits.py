"""limits.cpu bounds a whole guest callback, hostcalls included, and a failed guest call
is classified by wasmtime's trap code (edgegw/wasm/native/call.c), never by its text."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgegw.errors import WasmDeadline, WasmTrap
from tests.wat import BASE_WITHOUT_CONFIGURE, proxy_wat, write_wasm

REPO = Path(__file__).resolve().parents[2]

# A hostile filter: each header callback loops forever on a hostcall that answers bytes
# through the guest's allocator (a guest call nested in the hostcall): the request
# callback on proxy_get_header_map_value (answered in C), the body callback on
# proxy_get_buffer_bytes (a Python hostcall answering through fastcall.Memory.answerer).
_LOOPS = proxy_wat(
    """
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buf (param i32 i32 i32 i32 i32) (result i32)))
""",
    """
  (data (i32.const 16) "x-a")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (loop $again
      (drop (call $get (i32.const 0) (i32.const 16) (i32.const 3) (i32.const 32) (i32.const 36)))
      (br $again))
    i32.const 0)
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (loop $again
      (drop (call $buf (i32.const 7) (i32.const 0) (i32.const 64) (i32.const 32) (i32.const 36)))
      (br $again))
    i32.const 0)
""",
)

# Run in a child process: a guest that is never interrupted holds the GIL in C, where
# no signal handler (pytest-timeout's) can run; the child's timeout is the backstop.
_CHILD = """
import sys
from pathlib import Path

from edgegw.errors import WasmError
from edgegw.wasm.state import StreamState
from tests.wat import exchange, load_plugin

plugin = load_plugin(Path(sys.argv[1]), "cpu-loop", cpu=0.05, config=b"cfg")
plugin.current = StreamState(exchange([(b"x-a", b"first")]))
for hook in (plugin.on_request_headers, plugin.on_request_body):
    assert hook is not None
    plugin.memory.write(32, bytes(8))
    try:
        hook(2, 1, 1)
        outcome = "returned"
    except WasmError as exc:
        outcome = type(exc).__name__
    # The size of the last answer: the hostcall really answered through the allocator.
    print(outcome, plugin.memory.read_u32(36), flush=True)
"""


def test_a_guest_looping_on_a_bytes_hostcall_is_stopped_by_limits_cpu(tmp_path: Path) -> None:
    # The allocator call inside each hostcall used to set the store's deadline again,
    # handing the loop a fresh limits.cpu at every iteration: it ran until killed.
    wasm = write_wasm(tmp_path, "loops", _LOOPS)
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_CHILD), str(wasm)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a guest looping on a hostcall was never interrupted by limits.cpu")
    assert done.returncode == 0, done.stderr
    # Interrupted by the CPU limit, in the C hostcall path and the Python one, each
    # after answering its bytes ("first", "cfg") at every iteration.
    assert done.stdout.split("\n")[:2] == ["WasmDeadline 5", "WasmDeadline 3"]


def test_a_deadline_in_a_nested_guest_call_is_a_deadline(tmp_path: Path) -> None:
    from tests.wat import load_plugin

    # The allocator loops: the deadline strikes in the guest call a hostcall made. The
    # hostcall's trap unwinds the callback, which failed at its deadline all the same.
    base = """
  (memory (export "memory") 2)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32)
    (loop $forever (br $forever))
    i32.const 4096)
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
"""
    wat = proxy_wat(
        '(import "env" "proxy_get_buffer_bytes" '
        "(func $buf (param i32 i32 i32 i32 i32) (result i32)))",
        """
  (func (export "answer") (result i32)
    (call $buf (i32.const 7) (i32.const 0) (i32.const 64) (i32.const 32) (i32.const 36)))
""",
        base,
    )
    plugin = load_plugin(write_wasm(tmp_path, "nested", wat), "nested", config=b"cfg")
    with pytest.raises(WasmDeadline):
        plugin.call("answer")
    plugin.close()


def test_a_trap_is_not_a_deadline_whatever_its_text_says(tmp_path: Path) -> None:
    from tests.wat import load_plugin

    # wasmtime's message quotes the guest's function names (its backtrace): the
    # classification used to look for "interrupt" in it.
    wat = proxy_wat("", '(func $interrupt_handler (export "boom") unreachable)')
    plugin = load_plugin(write_wasm(tmp_path, "named", wat), "named")
    with pytest.raises(WasmTrap, match="boom: "):
        plugin.call("boom")
    plugin.close()


# A filter whose set-up takes 200 ms of wall-clock time (it waits on the host's clock, so
# the duration does not depend on the machine's speed), then serves a request that waits
# just as long.
_SLOW_START = proxy_wat(
    """
  (import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))
""",
    """
  (func $wait_200ms (local $t0 i64)
    (drop (call $now (i32.const 0)))
    (local.set $t0 (i64.load (i32.const 0)))
    (loop $again
      (drop (call $now (i32.const 0)))
      (br_if $again (i64.lt_u (i64.sub (i64.load (i32.const 0)) (local.get $t0))
                              (i64.const 200000000)))))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (call $wait_200ms) i32.const 1)
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $wait_200ms) i32.const 0)
""",
    base=BASE_WITHOUT_CONFIGURE,
)


def test_a_filter_start_runs_under_the_start_deadline_not_limits_cpu(tmp_path: Path) -> None:
    from tests.wat import load_plugin

    # A filter's heavy set-up (jwt_auth parsing its keys) runs once per load, in
    # on_configure: under limits.cpu (50 ms here) a loaded CPU failed the load.
    plugin = load_plugin(write_wasm(tmp_path, "slow_start", _SLOW_START), "slow-start", cpu=0.05)
    try:
        # Request callbacks keep limits.cpu.
        with pytest.raises(WasmDeadline):
            plugin.call("proxy_on_request_headers", 2, 0, 1)
    finally:
        plugin.close()
