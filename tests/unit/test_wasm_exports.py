"""The hostcall table (edgegw/wasm/exports.py) against the ABI and the implementations."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from edgegw.errors import FilterLoadError
from edgegw.wasm.exports import HOSTCALLS, NAME, STR, Answer
from edgegw.wasm.plugin import Plugin
from tests.wat import load_plugin, proxy_wat, write_wasm

# proxy-wasm spec, abi-versions/v0.2.1/README.md: every "Functions exposed by the host"
# outside WASI, with its parameters' wasm types (every one returns an i32 status).
_I = "i32"
ABI_V0_2_1 = {
    "proxy_done": (),
    "proxy_set_effective_context": (_I,),
    "proxy_log": (_I,) * 3,
    "proxy_get_log_level": (_I,),
    "proxy_get_current_time_nanoseconds": (_I,),
    "proxy_set_tick_period_milliseconds": (_I,),
    "proxy_set_buffer_bytes": (_I,) * 5,
    "proxy_get_buffer_bytes": (_I,) * 5,
    "proxy_get_buffer_status": (_I,) * 3,
    "proxy_get_header_map_size": (_I,) * 2,
    "proxy_get_header_map_pairs": (_I,) * 3,
    "proxy_set_header_map_pairs": (_I,) * 3,
    "proxy_get_header_map_value": (_I,) * 5,
    "proxy_add_header_map_value": (_I,) * 5,
    "proxy_replace_header_map_value": (_I,) * 5,
    "proxy_remove_header_map_value": (_I,) * 3,
    "proxy_continue_stream": (_I,),
    "proxy_close_stream": (_I,),
    "proxy_get_status": (_I,) * 3,
    "proxy_send_local_response": (_I,) * 8,
    "proxy_http_call": (_I,) * 10,
    "proxy_grpc_call": (_I,) * 12,
    "proxy_grpc_stream": (_I,) * 9,
    "proxy_grpc_send": (_I,) * 4,
    "proxy_grpc_cancel": (_I,),
    "proxy_grpc_close": (_I,),
    "proxy_set_shared_data": (_I,) * 5,
    "proxy_get_shared_data": (_I,) * 5,
    "proxy_register_shared_queue": (_I,) * 3,
    "proxy_resolve_shared_queue": (_I,) * 5,
    "proxy_enqueue_shared_queue": (_I,) * 3,
    "proxy_dequeue_shared_queue": (_I,) * 3,
    "proxy_define_metric": (_I,) * 4,
    "proxy_record_metric": (_I, "i64"),
    "proxy_increment_metric": (_I, "i64"),
    "proxy_get_metric": (_I,) * 2,
    "proxy_get_property": (_I,) * 4,
    "proxy_set_property": (_I,) * 4,
    "proxy_call_foreign_function": (_I,) * 6,
}
# Not in v0.2.1, and why edgegw defines them.
EXTRA = {
    "proxy_continue_request",  # v0.2.0
    "proxy_continue_response",  # v0.2.0
    "proxy_clear_route_cache",  # v0.2.0
    "emscripten_notify_memory_growth",  # Emscripten-built modules
}


def test_table_is_the_abi_plus_the_documented_extras() -> None:
    assert set(HOSTCALLS) - EXTRA == set(ABI_V0_2_1)
    for name, params in ABI_V0_2_1.items():
        assert HOSTCALLS[name].wasm_params == params, name
        assert HOSTCALLS[name].wasm_results == ("i32",), name


def test_every_python_entry_has_a_method_taking_its_parameters() -> None:
    for name, export in HOSTCALLS.items():
        if export.answer is not Answer.PYTHON:
            continue
        method = getattr(Plugin, name, None)
        assert callable(method), f"{name}: no Hostcalls method"
        params = list(inspect.signature(method).parameters.values())[1:]  # after self
        if any(p.kind is p.VAR_POSITIONAL for p in params):
            continue
        required = [p for p in params if p.default is p.empty]
        assert len(required) <= len(export.params) <= len(params), name


def test_strings_and_signedness_come_from_the_kinds() -> None:
    add = HOSTCALLS["proxy_add_header_map_value"]
    assert (add.strings, add.lower_first, add.signed) == ((1, 3), True, ())
    shared = HOSTCALLS["proxy_set_shared_data"]
    assert (shared.strings, shared.lower_first) == ((0, 2), False)
    assert HOSTCALLS["proxy_increment_metric"].signed == (1,)
    assert HOSTCALLS["proxy_record_metric"].signed == ()  # u64 value
    assert all(
        bool(e.strings) == any(k in (STR, NAME) for k in e.params) for e in HOSTCALLS.values()
    )


def _imports(names: list[str], override: dict[str, str] | None = None) -> str:
    lines = []
    for i, name in enumerate(names):
        export = HOSTCALLS[name]
        sig = f"(param {' '.join(export.wasm_params)})" if export.wasm_params else ""
        res = f"(result {' '.join(export.wasm_results)})" if export.wasm_results else ""
        sig = (override or {}).get(name, f"{sig} {res}")
        lines.append(f'(import "env" "{name}" (func $f{i} {sig}))')
    return "\n".join(lines)


def test_a_module_importing_every_hostcall_loads(tmp_path: Path) -> None:
    wasm = write_wasm(tmp_path, "all", proxy_wat(_imports(sorted(HOSTCALLS)), ""))
    plugin = load_plugin(wasm, "all")
    assert plugin.name == "all"


def test_a_wrong_signature_is_refused_naming_both(tmp_path: Path) -> None:
    wrong = {"proxy_increment_metric": "(param i32 i32) (result i32)"}
    wat = proxy_wat(_imports(["proxy_increment_metric"], wrong), "")
    with pytest.raises(FilterLoadError) as err:
        load_plugin(write_wasm(tmp_path, "wrong", wat), "wrong")
    assert "env.proxy_increment_metric has type (i32, i32) -> (i32)" in str(err.value)
    assert "declares (i32, i64) -> (i32)" in str(err.value)


def test_an_unknown_hostcall_is_refused(tmp_path: Path) -> None:
    """A misspelt or future import fails the load, as in Envoy; never UNIMPLEMENTED."""
    misspelt = '(import "env" "proxy_get_header_map_valeu" (func (param i32) (result i32)))'
    wat = proxy_wat(misspelt, "")
    with pytest.raises(FilterLoadError) as err:
        load_plugin(write_wasm(tmp_path, "unknown", wat), "unknown")
    assert "unknown import env.proxy_get_header_map_valeu" in str(err.value)
