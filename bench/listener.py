"""The listener scenarios of bench/run.py: HTTPS (HTTP/1.1 over TLS, loaded by wrk) and
HTTP/2 over TLS (ALPN h2, loaded by h2load from nghttp2-client, as wrk speaks only
HTTP/1.1). edgegw and Envoy terminate TLS with the same certificate and key (ECDSA P-256,
self-signed, made once per run here) and the same minimum version (TLS 1.2); both
proxy to the backend over cleartext HTTP/1.1.
"""

from __future__ import annotations

import atexit
import datetime
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from harness import LOAD_CORE, Result, Scenario, wrk

_DIR = Path(tempfile.mkdtemp(prefix="edgegw-bench-tls-"))
atexit.register(shutil.rmtree, _DIR, True)
CERT, KEY = _DIR / "tls.crt", _DIR / "tls.key"
TLS_CONTEXT = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"


def _make_pair() -> None:
    """A self-signed certificate for localhost (the load tools do not verify it)."""
    if CERT.exists():
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    CERT.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    KEY.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def scenarios() -> list[Scenario]:
    _make_pair()
    tls = f'tls: {{cert: "{CERT}", key: "{KEY}", min_version: "1.2"}}\n'
    return [
        Scenario(
            "https",
            "plain proxying, HTTPS (HTTP/1.1 over TLS)",
            listener="https",
            extra_edgegw_yaml=tls,
        ),
        Scenario(
            "http2",
            "plain proxying, HTTP/2 over TLS (ALPN h2), one stream per connection at a time",
            listener="h2",
            extra_edgegw_yaml=tls + "http2: true\n",
        ),
    ]


def envoy_transport(scenario: Scenario) -> str:
    """The Envoy listener's TLS, with the scenario's ALPN (Envoy's codec: AUTO)."""
    if not scenario.listener:
        return ""
    alpn = "[h2, http/1.1]" if scenario.listener == "h2" else "[http/1.1]"
    return f"""transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": {TLS_CONTEXT}
          common_tls_context:
            alpn_protocols: {alpn}
            tls_params: {{tls_minimum_protocol_version: TLSv1_2}}
            tls_certificates:
            - certificate_chain: {{filename: "{CERT}"}}
              private_key: {{filename: "{KEY}"}}
      """


def load(
    scenario: Scenario,
    port: int,
    path: str,
    duration: float,
    connections: int,
    headers: tuple[str, ...] = (),
) -> Result:
    """The scenario's load on ``port``: wrk for HTTP/1.1 (TLS or not), h2load for h2."""
    if scenario.listener == "h2":
        assert not headers, "h2 scenarios send no extra headers"
        return h2load(f"https://127.0.0.1:{port}{path}", duration, connections)
    scheme = "https" if scenario.listener == "https" else "http"
    return wrk(f"{scheme}://127.0.0.1:{port}{path}", duration, connections, headers)


def h2load(url: str, duration: float, connections: int) -> Result:
    """h2load, one thread, ``connections`` connections of one stream each (as wrk's
    connections: one request at a time); p50/p99 from its per-request log."""
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        cmd = ["taskset", "-c", LOAD_CORE, "h2load", "-t1", f"-c{connections}", "-m1"]
        cmd += [f"-D{duration:.0f}", f"--log-file={log.name}", url]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        latencies = sorted(
            int(line.split("\t")[2]) / 1000.0
            for line in Path(log.name).read_text().splitlines()
            if line.count("\t") >= 2
        )
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    failed = int(m.group(2)) if m else 0
    if not re.search(r"Application protocol: h2", out):
        raise RuntimeError(f"h2load did not speak h2:\n{out}")
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return Result(rps=rps, p50_ms=cuts[49], p99_ms=cuts[98], errors=failed)
