"""proxy_get_property's common case in C (native/property.c) answers what the Python
method (wasm/properties.py) answers, through a real guest: each read runs with the C
path and with the Python method alone, over the Exchanges that change the answer."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgegw.chain import Exchange
from edgegw.errors import WasmTrap
from edgegw.wasm import exports
from edgegw.wasm.abi import Status
from edgegw.wasm.exports import HOSTCALLS
from edgegw.wasm.plugin import Plugin
from edgegw.wasm.state import StreamState
from tests.unit.test_wasm_hostile import GEO, OUT, OUT_SIZE, PEER, SOURCE, _guest
from tests.wat import exchange, load_plugin, write_wasm

PATHS = {"peer": (PEER, 19), "geo": (GEO, 18), "source": (SOURCE, 14)}


@pytest.fixture(params=[True, False], ids=["c-fast-path", "python-only"])
def plugin(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Plugin]:
    if not request.param:
        export = HOSTCALLS["proxy_get_property"]
        monkeypatch.setitem(exports.HOSTCALLS, export.name, dataclasses.replace(export, fast=None))
    vm = load_plugin(write_wasm(tmp_path, "props", _guest()), "props", config=b"cfg")
    yield vm
    vm.close()


def _read(plugin: Plugin, ex: Exchange, path: str) -> tuple[int, bytes | None] | str:
    state = StreamState(ex)
    plugin.streams[2] = state
    plugin.current = state
    try:
        status = plugin.funcs["call_proxy_get_property"](*PATHS[path], OUT, OUT_SIZE)
    except WasmTrap:
        return "trap"
    finally:
        plugin.current = None
        plugin.streams.pop(2, None)
    if status != Status.OK:
        return status, None
    ptr, size = plugin.memory.read_u32(OUT), plugin.memory.read_u32(OUT_SIZE)
    return status, plugin.memory.read(ptr, size)


def _cases() -> dict[str, tuple[Exchange, str | None]]:
    """name: (exchange, the geo lookup's country or None for no lookup)."""
    trusted = exchange([])
    trusted.trusted_peer = True
    ipv6 = exchange([])
    ipv6.client = ("2001:db8::1", 65535)
    set_by_filter = exchange([])
    set_by_filter.properties.update({"edgegw.peer_trusted": b"yes", "source.address": "x"})
    other = exchange([])
    other.properties["something.else"] = 1
    odd_client = exchange([])
    odd_client.client = ["10.0.0.1", 80]  # type: ignore[assignment]  # not a tuple: Python
    latin = exchange([])
    latin.client = ("\u20ac", 1)  # not latin-1: both trap
    return {
        "untrusted": (exchange([]), None),
        "trusted": (trusted, None),
        "ipv6": (ipv6, None),
        "set by a filter": (set_by_filter, None),
        "another property set": (other, None),
        "not a tuple": (odd_client, None),
        "not latin-1": (latin, None),
        "geoip answers": (exchange([]), "DE"),
        "geoip does not know": (exchange([]), ""),
    }


@pytest.mark.parametrize("path", sorted(PATHS))
def test_property_answers(plugin: Plugin, path: str) -> None:
    got = {}
    for name, (ex, country) in _cases().items():
        plugin.geo = None if country is None else (lambda _ip, c=country: c or None)
        got[name] = _read(plugin, ex, path)
    expected = {
        "peer": {"trusted": (Status.OK, b"\x01"), "set by a filter": (Status.OK, b"yes")},
        "geo": {"geoip answers": (Status.OK, b"DE")},
        "source": {
            "ipv6": (Status.OK, b"2001:db8::1:65535"),
            "not a tuple": (Status.OK, b"10.0.0.1:80"),
            "set by a filter": (Status.OK, b"x"),
            "not latin-1": "trap",
        },
    }[path]
    default = {
        "peer": (Status.OK, b"\x00"),
        "geo": (Status.NOT_FOUND, None),
        "source": (Status.OK, b"127.0.0.1:1"),
    }[path]
    assert got == {name: expected.get(name, default) for name in _cases()}
