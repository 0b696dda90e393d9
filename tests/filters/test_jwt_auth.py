"""jwt_auth on every host: algorithms, claims, 401/403 shapes, remote JWKS, and a
differential test of over 1000 generated tokens against PyJWT's verdict."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.filters.harness import Backend, RunningGateway, StartGateway

HS_ISS, KEYS_ISS, REMOTE_ISS = "https://hs.example", "https://keys.example", "https://idp.example"
SECRET = "s3cret-hs-key-long-enough-for-hs512-" + "k" * 40  # >= 64 bytes: no key-length warning
AUD = "api"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class KeySet:
    """Private keys by kid, and the public JWKS built from them."""

    private: dict[str, Any] = field(default_factory=dict)
    algs: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kid: str, key: Any, algs: list[str]) -> None:
        self.private[kid] = key
        self.algs[kid] = algs

    def jwk(self, kid: str) -> dict[str, Any]:
        public = self.private[kid].public_key()
        alg = self.algs[kid][0]
        doc = json.loads(jwt.get_algorithm_by_name(alg).to_jwk(public))
        doc["kid"] = kid
        return doc  # type: ignore[no-any-return]

    def jwks(self, *kids: str) -> dict[str, Any]:
        return {"keys": [self.jwk(k) for k in (kids or self.private)]}


@pytest.fixture(scope="module")
def keyset() -> KeySet:
    ks = KeySet()
    ks.add(
        "rsa1",
        rsa.generate_private_key(65537, 2048),
        ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
    )
    ks.add("ec256", ec.generate_private_key(ec.SECP256R1()), ["ES256"])
    ks.add("ec384", ec.generate_private_key(ec.SECP384R1()), ["ES384"])
    ks.add("ed", ed25519.Ed25519PrivateKey.generate(), ["EdDSA"])
    return ks


@pytest.fixture(scope="module")
def strangers() -> KeySet:
    """Keys of the same kinds that the gateway does not know (wrong-key tokens)."""
    ks = KeySet()
    ks.add("rsa1", rsa.generate_private_key(65537, 2048), ["RS256"])
    ks.add("ec256", ec.generate_private_key(ec.SECP256R1()), ["ES256"])
    ks.add("ec384", ec.generate_private_key(ec.SECP384R1()), ["ES384"])
    ks.add("ed", ed25519.Ed25519PrivateKey.generate(), ["EdDSA"])
    return ks


def filter_config(keyset: KeySet, **extra: Any) -> dict[str, Any]:
    return {
        "providers": [
            {"issuer": HS_ISS, "audiences": [AUD], "secret": SECRET},
            {"issuer": KEYS_ISS, "audiences": [AUD, "other"], "jwks": keyset.jwks()},
        ],
        "forward_claims": {"sub": "x-user-id"},
        **extra,
    }


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    doc = {"iss": KEYS_ISS, "aud": AUD, "sub": "alice", "iat": now, "exp": now + 600}
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def sign(keyset: KeySet, alg: str, payload: dict[str, Any], kid: str | None = None) -> str:
    if alg.startswith("HS"):
        return jwt.encode(
            {"iss": HS_ISS, **payload} if "iss" not in payload else payload, SECRET, alg
        )
    kid = kid or next(k for k, algs in keyset.algs.items() if alg in algs)
    return jwt.encode(payload, keyset.private[kid], alg, headers={"kid": kid})


def seen_headers(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.json()["headers"].items()}


@pytest.fixture
def gateway(gateway_factory: StartGateway, backend_factory: Any, keyset: KeySet) -> RunningGateway:
    return gateway_factory([("jwt_auth", filter_config(keyset))], backend_factory().port)


ALGS = [
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "EdDSA",
]


def test_every_algorithm_verifies_and_forwards_claims(
    gateway: RunningGateway, keyset: KeySet
) -> None:
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        for alg in ALGS:
            tok = sign(keyset, alg, claims(iss=HS_ISS if alg.startswith("HS") else KEYS_ISS))
            r = client.get(
                "/x",
                headers={
                    "authorization": f"Bearer {tok}",
                    "x-user-id": "mallory",
                    "x-edgegw-claims": "forged",
                },
            )
            assert r.status_code == 200, (alg, r.text, gateway.log()[-1500:])
            seen = seen_headers(r)
            assert seen["x-user-id"] == "alice"  # the client's copy was replaced
            forwarded = json.loads(base64.urlsafe_b64decode(seen["x-edgegw-claims"] + "=="))
            assert forwarded["sub"] == "alice"


def test_rejections_have_the_rfc6750_shape(gateway: RunningGateway, keyset: KeySet) -> None:
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        r = client.get("/x", headers={"x-user-id": "mallory"})
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="edgegw"'
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 401
        expired = sign(keyset, "ES256", claims(exp=int(time.time()) - 3600))
        r = client.get("/x", headers={"authorization": f"Bearer {expired}"})
        assert r.status_code == 401
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        assert "expired" in r.json()["detail"]


def test_scopes_and_required_claims_give_403(
    gateway_factory: StartGateway, backend_factory: Any, keyset: KeySet
) -> None:
    cfg = filter_config(keyset, required_scopes=["orders:read"], required_claims=["sub"])
    gw = gateway_factory([("jwt_auth", cfg)], backend_factory().port)
    with httpx.Client(base_url=gw.base_url, timeout=10) as client:
        ok = sign(keyset, "EdDSA", claims(scope="profile orders:read"))
        assert client.get("/x", headers={"authorization": f"Bearer {ok}"}).status_code == 200
        scp = sign(keyset, "EdDSA", claims(scp=["orders:read"]))
        assert client.get("/x", headers={"authorization": f"Bearer {scp}"}).status_code == 200
        none = sign(keyset, "EdDSA", claims(scope="profile"))
        r = client.get("/x", headers={"authorization": f"Bearer {none}"})
        assert r.status_code == 403
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
        nosub = sign(keyset, "EdDSA", claims(sub=None, scope="orders:read"))
        assert client.get("/x", headers={"authorization": f"Bearer {nosub}"}).status_code == 403


def test_token_from_cookie_or_query_and_optional_auth(
    gateway_factory: StartGateway, backend_factory: Any, keyset: KeySet
) -> None:
    cfg = filter_config(
        keyset, from_cookie="session", from_query="access_token", allow_missing=True
    )
    gw = gateway_factory([("jwt_auth", cfg)], backend_factory().port)
    tok = sign(keyset, "ES384", claims())
    with httpx.Client(base_url=gw.base_url, timeout=10) as client:
        r = client.get("/x", headers={"cookie": f"a=1; session={tok}"})
        assert seen_headers(r)["x-user-id"] == "alice"
        r = client.get(f"/x?access_token={tok}")
        assert seen_headers(r)["x-user-id"] == "alice"
        r = client.get("/x", headers={"x-user-id": "mallory"})  # anonymous, but no spoofing
        assert r.status_code == 200 and "x-user-id" not in seen_headers(r)


class JwksServer:
    """An IdP on loopback: serves ``doc`` (or fails) and counts fetches."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.fail = False
        self.fetches = 0
        self.lock = threading.Lock()
        self.backend = Backend(self.handle)

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        with self.lock:
            self.fetches += 1
            if self.fail:
                return 500, [], b"down"
            return 200, [("content-type", "application/json")], json.dumps(self.doc).encode()


def test_remote_jwks_refetch_on_unknown_kid_and_stale_keys_on_failure(
    gateway_factory: StartGateway, backend_factory: Any, keyset: KeySet
) -> None:
    idp = JwksServer(keyset.jwks("ec256"))
    cfg = {
        "providers": [
            {
                "issuer": REMOTE_ISS,
                "audiences": [AUD],
                "jwks_uri": {
                    "backend": "idp",
                    "path": "/jwks",
                    "cache_seconds": 3600,
                    "min_refetch_seconds": 0,
                },
            }
        ],
        "forward_claims": {"sub": "x-user-id"},
    }
    gw = gateway_factory(
        [("jwt_auth", cfg)], backend_factory().port, clusters={"idp": idp.backend.port}
    )
    try:
        with httpx.Client(base_url=gw.base_url, timeout=10) as client:
            ec_tok = sign(keyset, "ES256", claims(iss=REMOTE_ISS))
            r = client.get("/x", headers={"authorization": f"Bearer {ec_tok}"})
            assert r.status_code == 200, (r.text, gw.log()[-2000:])
            # A token signed by a key the IdP published since: one refetch, then accepted.
            idp.doc = keyset.jwks("ec256", "ed")
            before = idp.fetches
            ed_tok = sign(keyset, "EdDSA", claims(iss=REMOTE_ISS))
            r = client.get("/x", headers={"authorization": f"Bearer {ed_tok}"})
            assert r.status_code == 200, (r.text, gw.log()[-2000:])
            assert idp.fetches == before + 1
            # The IdP fails: the keys we have keep working, unknown ones are refused.
            idp.fail = True
            assert (
                client.get("/x", headers={"authorization": f"Bearer {ec_tok}"}).status_code == 200
            )
            rsa_tok = sign(keyset, "RS256", claims(iss=REMOTE_ISS))
            r = client.get("/x", headers={"authorization": f"Bearer {rsa_tok}"})
            assert r.status_code == 401
            assert (
                client.get("/x", headers={"authorization": f"Bearer {ed_tok}"}).status_code == 200
            )
    finally:
        idp.backend.close()


# --- differential test against PyJWT ------------------------------------------------------


def pyjwt_verdict(token: str, keyset: KeySet, skew: int = 60) -> int:
    """What the gateway must answer (200/401), decided by PyJWT with the same keys."""
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
        iss = unverified.get("iss")
        alg = header.get("alg")
        if iss == HS_ISS:
            key: Any = SECRET
            algorithms = [a for a in ("HS256", "HS384", "HS512") if a == alg]
            audience = [AUD]
        elif iss == KEYS_ISS:
            kid = header.get("kid")
            kids = [kid] if kid in keyset.private else ([] if kid else list(keyset.private))
            kids = [
                k
                for k in kids
                if alg in keyset.algs[k] or (k == "rsa1" and alg in keyset.algs["rsa1"])
            ]
            if not kids:
                return 401
            key = keyset.private[kids[0]].public_key()
            algorithms = [alg]
            audience = [AUD, "other"]
        else:
            return 401
        if len(token) > 8192:
            return 401
        jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=audience,
            issuer=iss,
            leeway=skew,
            options={"require": ["iss", "aud"]},
        )
        return 200
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return 401


KINDS = [
    "valid",
    "valid",
    "expired",
    "skew_ok",
    "nbf_future",
    "iat_future",
    "wrong_sig",
    "wrong_key",
    "wrong_iss",
    "wrong_aud",
    "aud_list",
    "no_aud",
    "none",
    "hs_confusion",
    "truncated",
    "bad_b64",
    "oversized",
    "exp_string",
    "aud_number",
    "no_exp",
]


def generate_tokens(keyset: KeySet, strangers: KeySet, count: int) -> list[tuple[str, str]]:
    rng = random.Random(1234)
    now = int(time.time())
    rsa_pem = (
        keyset.private["rsa1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    out: list[tuple[str, str]] = []
    while len(out) < count:
        alg = rng.choice(ALGS)
        iss = HS_ISS if alg.startswith("HS") else KEYS_ISS
        kind = rng.choice(KINDS)
        body = claims(iss=iss)
        tok = ""
        if kind == "expired":
            body["exp"] = now - rng.randint(120, 100_000)
        elif kind == "skew_ok":
            body["exp"] = now - rng.randint(5, 30)  # within the 60 s skew
        elif kind == "nbf_future":
            body["nbf"] = now + rng.randint(120, 100_000)
        elif kind == "iat_future":
            body["iat"] = now + rng.randint(120, 100_000)
        elif kind == "wrong_iss":
            body["iss"] = "https://evil.example"
        elif kind == "wrong_aud":
            body["aud"] = "someone-else"
        elif kind == "aud_list":
            body["aud"] = ["x", rng.choice([AUD, "y"])]
        elif kind == "no_aud":
            del body["aud"]
        elif kind == "exp_string":
            body["exp"] = str(now + 600)
        elif kind == "aud_number":
            body["aud"] = 42
        elif kind == "no_exp":
            del body["exp"]
        elif kind == "oversized":
            body["blob"] = "x" * rng.randint(6200, 9000)
        if kind == "wrong_key":
            if alg.startswith("HS"):
                tok = jwt.encode(body, SECRET + "-other", alg)
            else:
                kid = next(k for k, algs in keyset.algs.items() if alg in algs)
                tok = jwt.encode(body, strangers.private[kid], alg, headers={"kid": kid})
        elif kind == "none":
            tok = (
                b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
                + "."
                + b64(json.dumps(body).encode())
                + "."
            )
        elif kind == "hs_confusion":
            body["iss"] = KEYS_ISS
            head = b64(json.dumps({"alg": "HS256", "kid": "rsa1"}).encode())
            signed = head + "." + b64(json.dumps(body).encode())
            mac = hmac.new(rsa_pem, signed.encode(), hashlib.sha256).digest()
            tok = signed + "." + b64(mac)
        else:
            tok = sign(keyset, alg, body)
        if kind == "wrong_sig":
            head, payload, sig = tok.split(".")
            raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            tok = f"{head}.{payload}.{b64(bytes(raw))}"
        elif kind == "truncated":
            tok = tok[: rng.randint(10, len(tok) - 1)]
        elif kind == "bad_b64":
            pos = rng.randrange(len(tok))
            tok = tok[:pos] + rng.choice("*!$~ ") + tok[pos + 1 :]
        out.append((f"{alg}/{kind}", tok.strip()))
    return out


def test_differential_against_pyjwt(
    gateway: RunningGateway, keyset: KeySet, strangers: KeySet
) -> None:
    tokens = generate_tokens(keyset, strangers, 1100)
    mismatches = []
    kinds: set[str] = set()
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        for label, tok in tokens:
            expected = pyjwt_verdict(tok, keyset)
            r = client.get("/x", headers={"authorization": f"Bearer {tok}"})
            kinds.add(label.split("/")[1])
            if r.status_code != expected:
                mismatches.append((label, expected, r.status_code, tok[:80], r.text[:200]))
    assert mismatches == [], mismatches[:10]
    assert kinds == set(KINDS)  # every kind of token was generated
    assert len(tokens) >= 1000
