"""The client TLS context of a backend's ``tls:`` (upstream TLS, mTLS)."""

from __future__ import annotations

import ssl

from edgegw.model import UpstreamTLS


def client_context(tls: UpstreamTLS | None) -> ssl.SSLContext:
    """Verifying (the system's CAs or ``ca``) unless ``verify: false``; with ``cert`` and
    ``key`` the client certificate is presented when the backend asks (mTLS). Built once
    per backend and worker: a context is costly to make and safe to share."""
    context = ssl.create_default_context(cafile=str(tls.ca) if tls and tls.ca else None)
    if tls is not None and not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls is not None and tls.cert is not None and tls.key is not None:
        context.load_cert_chain(str(tls.cert), str(tls.key))
    return context
