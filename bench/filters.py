"""Each bundled filter alone, edgegw vs Envoy, same .wasm, same config, same core.

    .venv/bin/python bench/filters.py

Per-request cost of a filter = 1/rps(with the filter) - 1/rps(plain proxying), per server.
Requests carry a valid HS256 token (jwt_auth) and are all allowed (rate_limit's burst is
far above the load), so every filter runs its full path.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jwt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    ROOT,
    Filter,
    Result,
    Scenario,
    nginx_backend,
    run_edgegw,
    run_envoy,
    write_block,
    wrk,
)

DURATION = float(os.environ.get("BENCH_DURATION", "8"))
CONNECTIONS = 32
DIST = ROOT / "filters" / "dist"
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


def measure(scenario: Scenario, backend_port: int) -> dict[str, Result]:
    headers = (f"Authorization: Bearer {TOKEN}", "X-Country-Code: DE")
    out: dict[str, Result] = {}
    for name, runner in (("envoy", run_envoy), ("edgegw", run_edgegw)):
        with runner(scenario, backend_port) as port:
            url = f"http://127.0.0.1:{port}{scenario.path}"
            wrk(url, duration=2, connections=CONNECTIONS, headers=headers)
            out[name] = wrk(url, duration=DURATION, connections=CONNECTIONS, headers=headers)
            if out[name].errors:
                raise RuntimeError(f"{name} answered errors for {scenario.name}")
    return out


def main() -> None:
    rows: list[tuple[str, int, dict[str, Result]]] = []
    with nginx_backend() as backend_port:
        plain = measure(Scenario("plain", "no filter"), backend_port)
        for name, config in CONFIGS.items():
            wasm = DIST / f"{name}.wasm"
            scenario = Scenario(name, name, filters=(Filter(name, wasm, json.dumps(config)),))
            rows.append((name, wasm.stat().st_size, measure(scenario, backend_port)))
            print(name, {k: str(v) for k, v in rows[-1][2].items()}, flush=True)

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
        f"{DURATION:.0f} s per run, {CONNECTIONS} connections, wrk -t1; {time.ctime()}",
    ]
    text = "\n".join(lines)
    print(text)
    write_block("filters", text, "The bundled filters, each alone (`bench/filters.py`)")


if __name__ == "__main__":
    main()
