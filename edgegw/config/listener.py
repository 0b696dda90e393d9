"""gateway.yaml's listener keys ``tls`` and ``http2`` → model (docs/configuration.md,
"Listener: tls, http2, websockets")."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, cast

from edgegw.config.yamlnodes import Node, Reader, as_str
from edgegw.model import ListenerTLS, TlsVersion

TLS_KEYS = ("cert", "key", "min_version")
VERSIONS: dict[str, ssl.TLSVersion] = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def as_tls_version(value: Any) -> str:
    # An unquoted 1.2 is a YAML float: take it as the string it was written as.
    text = str(value) if isinstance(value, (str, float)) else ""
    if text not in VERSIONS:
        raise ValueError(f'expected "1.2" or "1.3", got {value!r}')
    return text


def check_pair(cert: Path, key: Path) -> str | None:
    """Why ``cert``/``key`` cannot serve TLS (unreadable, not PEM, not a pair), or None."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        return f"cannot load the certificate and key: {exc}"
    return None


def read_listener_tls(r: Reader, node: Node | None, base: Path) -> ListenerTLS | None:
    if node is None or (m := r.mapping(node, TLS_KEYS, required=("cert", "key"))) is None:
        return None
    files: dict[str, Path] = {}
    for name in ("cert", "key"):
        text = r.convert(m.get(name), as_str, "")
        if text:
            files[name] = base / text
            if not files[name].is_file():
                r.problem(m[name], f"file not found: {files[name]}")
    if len(files) < 2:
        return None
    if all(f.is_file() for f in files.values()):
        # edgegw check, and a reload, refuse a pair the listener could not serve.
        problem = check_pair(files["cert"], files["key"])
        if problem is not None:
            r.problem(node, problem)
    version = r.convert(m.get("min_version"), as_tls_version, "1.2")
    return ListenerTLS(files["cert"], files["key"], cast(TlsVersion, version))
