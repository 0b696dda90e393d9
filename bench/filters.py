"""Each bundled filter alone, edgegw vs Envoy, same .wasm, same config, same core.

    .venv/bin/python bench/filters.py
    BENCH_ROUNDS=3 BENCH_DURATION=5 .venv/bin/python bench/filters.py   # the defaults

Per-request cost of a filter = 1/rps(with the filter) - 1/rps(plain proxying), per server.
Requests carry a valid HS256 token (jwt_auth) and are all allowed (rate_limit's burst is
far above the load), so every filter runs its full path. Rounds alternate Envoy and
edgegw and interleave the filters (bench/run.py's ``measure``); figures are medians.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jwt

os.environ.setdefault("BENCH_ROUNDS", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, Filter, Result, Scenario, nginx_backend, write_block
from run import CONNECTIONS, DURATION, ROUNDS, measure

# BENCH_FILTERS_DIST: other builds of the same filters (their optimize mode, say).
DIST = Path(os.environ.get("BENCH_FILTERS_DIST", str(ROOT / "filters" / "dist")))
SECRET = "bench-secret-" + "x" * 40
TOKEN = jwt.encode({"iss": "bench", "aud": "api", "sub": "u1", "exp": int(time.time()) + 86400},
                   SECRET, "HS256")  # fmt: skip
CONFIGS = {
    "jwt_auth": {"providers": [{"issuer": "bench", "audiences": ["api"], "secret": SECRET}],
                 "forward_claims": {"sub": "x-user-id"}},
    "rate_limit": {"policies": [{"name": "ip", "rate": 1000000, "period": "1s", "key": ["ip"]}]},
    "ab_flags": {"experiments": [{"name": "e", "variants": [{"name": "A", "weight": 50},
                                                            {"name": "B", "weight": 50}]}],
                 "key_headers": ["authorization"], "flags": {"f": {"rollout": 50}}},
    "geo": {"trusted_headers": ["x-country-code"], "countries": {"DE": {"language": "de"}}},
}  # fmt: skip


def main() -> None:
    headers = (f"Authorization: Bearer {TOKEN}", "X-Country-Code: DE")
    wasm = {name: DIST / f"{name}.wasm" for name in CONFIGS}
    chosen = [Scenario("plain", "no filter", headers=headers)] + [
        Scenario(name, name, filters=(Filter(name, wasm[name], json.dumps(config)),),
                 headers=headers)
        for name, config in CONFIGS.items()
    ]  # fmt: skip
    with nginx_backend() as backend_port:
        measured = measure(chosen, backend_port)
    for name, by_server in measured.items():
        if any(r.errors for r in by_server.values()):
            raise RuntimeError(f"errors answered for {name}: {by_server}")
    plain = measured["plain"]
    rows = [(name, wasm[name].stat().st_size, measured[name]) for name in CONFIGS]

    def cost_us(r: dict[str, Result], server: str) -> float:
        return (1 / r[server].rps - 1 / plain[server].rps) * 1e6

    lines = [
        "| filter | .wasm size | Envoy req/s | edgegw req/s | ratio "
        "| Envoy µs/request | edgegw µs/request |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| (none) | | {plain['envoy'].rps:,.0f} | {plain['edgegw'].rps:,.0f} "
        f"| {plain['edgegw'].rps / plain['envoy'].rps:.2f}x | | |",
        *(
            f"| {n} | {size / 1024:.0f} KiB | {r['envoy'].rps:,.0f} | {r['edgegw'].rps:,.0f} "
            f"| {r['edgegw'].rps / r['envoy'].rps:.2f}x | {cost_us(r, 'envoy'):.1f} "
            f"| {cost_us(r, 'edgegw'):.1f} |"
            for n, size, r in rows
        ),
        "",
        f"median of {ROUNDS} alternating rounds of {DURATION:.0f} s, {CONNECTIONS} "
        f"connections, wrk -t1; {time.ctime()}",
    ]
    text = "\n".join(lines)
    print(text)
    write_block("filters", text, "The bundled filters, each alone (`bench/filters.py`)")


if __name__ == "__main__":
    main()
