"""edgegw.filterbuild: discovery, real compilation with the pinned Zig, incremental
stamps, atomic outputs and compiler errors surfaced as FilterBuildError."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import wasmtime

from edgegw.errors import FilterBuildError
from edgegw.filterbuild import build_all, discover, input_digest

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
const pw = @import("proxy_wasm");
pub const panic = pw.panic;
const Root = struct {};
comptime { pw.plugin(Root); }
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "filters"
    shutil.copytree(REPO / "filters" / "sdk", src / "sdk")
    (src / "tiny").mkdir()
    (src / "tiny" / "main.zig").write_text(MINIMAL)
    (src / "notes").mkdir()  # no main.zig: not a filter
    return src


def test_discover_skips_sdk_and_non_filters(tree: Path) -> None:
    assert [d.name for d in discover(tree)] == ["tiny"]
    assert discover(tree / "missing") == []


def test_build_compiles_then_skips_until_an_input_changes(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    messages: list[str] = []
    [wasm] = build_all(tree, out, progress=messages.append)
    assert wasm == out / "tiny.wasm"
    assert any("tiny: built" in m for m in messages)
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(wasm))
    exports = {e.name for e in module.exports}
    assert {
        "proxy_abi_version_0_2_1",
        "proxy_on_memory_allocate",
        "proxy_on_context_create",
    } <= exports
    assert "proxy_on_request_headers" not in exports  # root-only plugin
    assert not list(out.glob("*.tmp"))

    messages.clear()
    build_all(tree, out, progress=messages.append)
    assert any("tiny: up to date" in m for m in messages)

    before = input_digest(tree / "tiny", tree / "sdk")
    (tree / "sdk" / "util.zig").write_text(
        (tree / "sdk" / "util.zig").read_text() + "\n// touched\n"
    )
    assert input_digest(tree / "tiny", tree / "sdk") != before
    messages.clear()
    build_all(tree, out, progress=messages.append)
    assert any("tiny: built" in m for m in messages)


def test_compile_error_carries_compiler_output(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    (tree / "tiny" / "main.zig").write_text(
        MINIMAL + "\nconst broken: u8 = 1234;\ncomptime { _ = broken; }\n"
    )
    with pytest.raises(FilterBuildError) as info:
        build_all(tree, out, progress=lambda _m: None)
    assert info.value.filter_name == "tiny"
    assert "main.zig" in info.value.output and "1234" in info.value.output
    assert not (out / "tiny.wasm").exists()


def test_unknown_filter_and_missing_sdk(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(FilterBuildError, match="no such filter"):
        build_all(tree, tmp_path / "dist", progress=lambda _m: None, only=["nope"])
    shutil.rmtree(tree / "sdk")
    with pytest.raises(FilterBuildError, match="SDK not found"):
        build_all(tree, tmp_path / "dist", progress=lambda _m: None)


def test_repository_filters_build() -> None:
    mine = ["ab_flags", "geo", "rate_limit"]
    outs = build_all(
        REPO / "filters", REPO / "filters" / "dist", progress=lambda _m: None, only=mine
    )
    assert [p.stem for p in outs] == mine
    assert all(p.stat().st_size > 0 for p in outs)
