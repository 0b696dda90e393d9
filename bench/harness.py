"""Processes for the benchmarks: nginx backend, Envoy, edgegw, wrk. Loopback only."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import otlp_sink

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SERVER_CORE = "0"  # the proxy under test
LOAD_CORE = "1"  # wrk and the nginx backend
HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)


@dataclass(frozen=True)
class Filter:
    """One wasm filter in a scenario, configured identically in both servers."""

    name: str
    wasm: Path
    config: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    path: str = "/bench"
    filters: tuple[Filter, ...] = ()
    extra_edgegw_yaml: str = ""
    route_edgegw_yaml: str = ""  # more keys of edgegw's route (indented 4)
    envoy_vhost_yaml: str = ""  # more keys of Envoy's virtual host (indented 14)
    envoy_filters_yaml: str = ""  # Envoy http filters before the wasm ones
    headers: tuple[str, ...] = ()  # request headers wrk sends
    access_log: bool = False  # both log each request as JSON to a file (ENVOY_ACCESS_LOG)
    listener: str = ""  # "https" | "h2": TLS on both proxies (bench/listener.py)
    tracing: float | None = None  # both servers trace, sampling this share (otlp_sink.py)


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    rounds: list[float] = field(default_factory=list)  # req/s of each round (bench/run.py)

    def __str__(self) -> str:
        err = f", {self.errors} errors" if self.errors else ""
        return f"{self.rps:9,.0f} req/s  p50 {self.p50_ms:.2f} ms  p99 {self.p99_ms:.2f} ms{err}"


def cpu_model() -> str:
    """The CPU the figures were taken on: ratios, not absolute numbers, carry across."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


@contextlib.contextmanager
def process(cmd: list[str], port: int, what: str, **kw: object) -> Iterator[None]:
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        ["taskset", "-c", str(kw.pop("core", SERVER_CORE)), *cmd],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **kw,  # type: ignore[call-overload]
    )
    try:
        try:
            wait_port(port, proc, what)
        except RuntimeError:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-4000:])
            raise
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextlib.contextmanager
def redis_server(core: str | None = None) -> Iterator[str]:
    """A throwaway redis-server on loopback (no persistence); yields its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [shutil.which("redis-server") or "redis-server", "--port", str(port),
               "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp]  # fmt: skip
        kw = {} if core is None else {"core": core}
        with process(cmd, port, "redis-server", **kw):
            yield f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def nginx_backend(workers: int = 1) -> Iterator[int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(
            f"""daemon off; worker_processes {workers}; pid {tmp}/nginx.pid; error_log stderr error;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp};
  fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port} reuseport;
    location / {{ default_type application/json; return 200 '{{"ok":true}}'; }} }}
}}
"""
        )
        with process([nginx, "-c", str(conf), "-p", tmp], port, "nginx", core=LOAD_CORE):
            yield port


# Envoy's JSON file access log with the fields of edgegw's default access log line.
ENVOY_ACCESS_LOG = """
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {path}
              log_format:
                json_format:
                  time: "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%"
                  route: "%ROUTE_NAME%"
                  method: "%REQ(:METHOD)%"
                  path: "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"
                  status: "%RESPONSE_CODE%"
                  duration_ms: "%DURATION%"
                  backend: "%UPSTREAM_CLUSTER%"
                  bytes_in: "%BYTES_RECEIVED%"
                  bytes_out: "%BYTES_SENT%"
                  client: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
                  request_id: "%REQ(X-REQUEST-ID)%"
                  trace_id: "%TRACE_ID%"
"""


def envoy_config(
    scenario: Scenario, port: int, admin_port: int, backend_port: int, log_path: str = ""
) -> str:
    access_log = ENVOY_ACCESS_LOG.format(path=log_path) if scenario.access_log else ""
    from listener import envoy_transport

    filters = []
    for f in scenario.filters:
        filters.append(
            f"""
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {f.name}
                root_id: {f.name}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {f.config!r}
                vm_config:
                  vm_id: {f.name}
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: {f.wasm}}}}}"""
        )
    tracing, collector = otlp_sink.envoy_tracing(scenario.tracing) if scenario.tracing else ("", "")
    return f"""
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}}}
static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - {envoy_transport(scenario)}filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM_TYPE}
          stat_prefix: bench{access_log}{tracing}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{name: all, match: {{prefix: "/"}}, route: {{cluster: backend}}}}]
{scenario.envoy_vhost_yaml}
          http_filters:{scenario.envoy_filters_yaml}{"".join(filters)}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {backend_port}}}}}
{collector}"""


@contextlib.contextmanager
def run_envoy(scenario: Scenario, backend_port: int) -> Iterator[int]:
    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "envoy.yaml"
        log = str(Path(tmp) / "access.log")
        cfg.write_text(envoy_config(scenario, port, admin, backend_port, log))
        cmd = [str(VENV_BIN / "envoy"), "-c", str(cfg), "--concurrency", "1"]
        cmd += ["--log-level", "error", "--base-id", str(port)]
        with process(cmd, port, "envoy"):
            yield port


def edgegw_config(scenario: Scenario, port: int, backend_port: int, log_path: str = "") -> str:
    access_log = f"{{path: {log_path}, format: json}}" if scenario.access_log else "false"
    filters = "".join(
        f"\n  {f.name}: {{wasm: {f.wasm}, config: {f.config!r}}}" for f in scenario.filters
    )
    names = ", ".join(f.name for f in scenario.filters)
    tracing = otlp_sink.edgegw_tracing(scenario.tracing) if scenario.tracing else ""
    return f"""version: 1
listen: 127.0.0.1:{port}
access_log: {access_log}
backends:
  backend: {{url: "http://127.0.0.1:{backend_port}"}}
{"filters:" + filters if filters else ""}
routes:
  - name: all
    match: {{prefix: /}}
    filters: [{names}]
    backend: backend
{scenario.route_edgegw_yaml}
{tracing}{scenario.extra_edgegw_yaml}"""


@contextlib.contextmanager
def run_edgegw(scenario: Scenario, backend_port: int) -> Iterator[int]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "gateway.yaml"
        cfg.write_text(edgegw_config(scenario, port, backend_port, str(Path(tmp) / "access.log")))
        cmd = [sys.executable, "-m", "edgegw", "serve", "-c", str(cfg)]
        with process(cmd, port, "edgegw", cwd=str(ROOT)):
            yield port


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


_SOCKET_ERRORS = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"


def wrk(url: str, duration: float, connections: int, headers: tuple[str, ...] = ()) -> Result:
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration:.0f}s"]
    for header in headers:
        cmd += ["-H", header]
    out = subprocess.run([*cmd, "--latency", url], capture_output=True, text=True, check=True)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text):
        errors += int(m.group(1))
    if m := re.search(_SOCKET_ERRORS, text):
        errors += sum(int(x) for x in m.groups())
    return Result(rps=rps, p50_ms=p50, p99_ms=p99, errors=errors)


def build_wasm(source: Path) -> Path:
    """Compile a Zig filter with the pinned toolchain (cached by mtime: newer than every
    .zig file beside it, which it may import)."""
    out_dir = ROOT / "bench" / ".build"
    out = out_dir / f"{source.stem}.wasm"
    newest = max(path.stat().st_mtime for path in source.parent.glob("*.zig"))
    if out.exists() and out.stat().st_mtime >= newest:
        return out
    out_dir.mkdir(exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "ziglang",
        "build-exe",
        str(source),
        "-target",
        "wasm32-freestanding",
        "-fno-entry",
        "-rdynamic",
        "-O",
        "ReleaseSmall",
        f"-femit-bin={out}",
        "--cache-dir",
        str(out_dir / "cache"),
    ]
    subprocess.run(cmd, check=True)
    return out


def _trivial(n: int, source: str = "trivial") -> tuple[Filter, ...]:
    wasm = build_wasm(ROOT / "bench" / "filters" / f"{source}.zig")
    return tuple(Filter(f"{source}{i}", wasm, f"n{i}") for i in range(n))


def scenarios() -> list[Scenario]:
    from listener import scenarios as listener_scenarios

    return [
        Scenario("plain", "plain proxying, no filters"),
        Scenario(
            "filters-1",
            "1 trivial wasm filter (adds a request and a response header)",
            filters=_trivial(1),
        ),
        Scenario("filters-4", "4 trivial wasm filters", filters=_trivial(4)),
        Scenario(
            "noop-1",
            "1 wasm filter without stream callbacks (the fixed cost of a filtered request)",
            filters=_trivial(1, "noop"),
        ),
        # What SCHED_BATCH (server._sched_batch) is worth; Envoy runs as in plain.
        Scenario(
            "plain-sched-other",
            "plain proxying, edgegw with sched_batch: false (the default CPU policy)",
            extra_edgegw_yaml="sched_batch: false\n",
        ),
        _front(),
        Scenario(
            "plain-log",
            "plain proxying, both writing a JSON access log line per request to a file",
            access_log=True,
        ),
        *listener_scenarios(),  # https, http2: bench/listener.py
        Scenario("tracing", "plain proxying, every request traced to OTLP/HTTP", tracing=1.0),
        Scenario("tracing-1pct", "plain proxying, 1% of requests traced", tracing=0.01),
    ]


def _front() -> Scenario:
    """CORS, header rules with a template and security headers, configured alike in
    both (edgegw's docs/configuration.md "Front door"; Envoy's CORS filter and its
    virtual host's header mutations), for a browser request with an allowed Origin."""
    edgegw_route = """    cors:
      allow_origins: ["https://app.example.com"]
      allow_methods: [GET, POST]
      allow_headers: [authorization, content-type]
      expose_headers: [x-request-id]
      allow_credentials: true
      max_age: 10m
    headers:
      request: {set: {x-env: prod, x-origin: "{header.origin}"}, remove: [x-debug]}
      response: {remove: [x-powered-by]}
"""
    vhost = """              typed_per_filter_config:
                envoy.filters.http.cors:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                  allow_origin_string_match: [{exact: "https://app.example.com"}]
                  allow_methods: "GET, POST"
                  allow_headers: "authorization, content-type"
                  expose_headers: "x-request-id"
                  allow_credentials: true
                  max_age: "600"
              request_headers_to_add:
              - {header: {key: x-env, value: prod}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
              - {header: {key: x-origin, value: "%REQ(origin)%"},
                 append_action: OVERWRITE_IF_EXISTS_OR_ADD}
              request_headers_to_remove: [x-debug]
              response_headers_to_remove: [x-powered-by]
              response_headers_to_add:
              - {header: {key: x-content-type-options, value: nosniff},
                 append_action: ADD_IF_ABSENT}
              - {header: {key: x-frame-options, value: DENY}, append_action: ADD_IF_ABSENT}
              - {header: {key: referrer-policy, value: strict-origin-when-cross-origin},
                 append_action: ADD_IF_ABSENT}
"""
    cors_filter = """
          - name: envoy.filters.http.cors
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"""
    return Scenario(
        "front",
        "plain proxying with CORS, header rules (a template) and security headers",
        extra_edgegw_yaml="security_headers: default\n",
        route_edgegw_yaml=edgegw_route,
        envoy_vhost_yaml=vhost,
        envoy_filters_yaml=cors_filter,
        headers=("Origin: https://app.example.com",),
    )


Runner = Callable[[Scenario, int], contextlib.AbstractContextManager[int]]


def save_results(kind: str, stamp: str, doc: dict[str, object]) -> Path:
    """Write raw figures to ``bench/results/<kind>-<stamp>.json``."""
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    path = results_dir / f"{kind}-{stamp}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def write_block(name: str, text: str, heading: str) -> None:
    """Replace the ``<!-- bench:NAME:begin/end -->`` block of docs/benchmarks.md (added
    under ``heading`` when missing)."""
    doc = ROOT / "docs" / "benchmarks.md"
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    current = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{begin}\n{text}\n{end}"
    if begin in current:
        current = re.sub(re.escape(begin) + ".*?" + re.escape(end), block, current, flags=re.S)
    else:
        current += f"\n## {heading}\n\n{block}\n"
    doc.write_text(current)


@contextlib.contextmanager
def edgegw_with(config_text: str, port: int) -> Iterator[Path]:
    """edgegw serving ``config_text`` (pinned to the server core); yields the config path."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "gateway.yaml"
        cfg.write_text(config_text)
        cmd = [sys.executable, "-m", "edgegw", "serve", "-c", str(cfg)]
        with process(cmd, port, "edgegw", cwd=str(ROOT)):
            yield cfg
