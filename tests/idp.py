"""A real identity provider for tests: keys generated here, its JWKS document served over HTTP on 127.0.0.1.

The server runs in a thread of its own (`http.server`), counts every fetch of the document, can swap the
document (key rotation), answer errors, or hold requests until released (a slow or hanging provider).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://idp.test/"
AUDIENCE = "switchboard-api"
JWKS_PATH = "/.well-known/jwks.json"


@dataclass
class SigningKey:
    """A private key of the provider, with the `kid` and algorithm it publishes."""

    kid: str
    alg: str
    private: Any

    @property
    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        kind = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[self.alg]
        jwk: dict[str, Any] = kind.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **header})


def new_key(alg: str = "RS256", kid: str | None = None) -> SigningKey:
    private: Any
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(alg)
    return SigningKey(kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}", alg, private)


def idp_claims(**changes: Any) -> dict[str, Any]:
    """Claims as a provider issues them for an API (an access token), with `changes` applied."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "auth0|ann",
        "name": "Ann",
        "iat": now,
        "exp": now + 300,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


class IdentityProvider:
    """Serves `{"keys": [...]}` of its current keys at JWKS_PATH; `fetches` counts the GETs."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.fetch_times: list[float] = []  # time.monotonic() at each request's arrival
        self.status = 200
        self.body: bytes | None = None  # served instead of the document when set
        self.hold = threading.Event()  # while clear, requests wait (set: answer at once)
        self.hold.set()
        self.entered = threading.Event()  # set when a request arrives
        self._changed = threading.Condition()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with provider._changed:
                    provider.fetches += 1
                    provider.fetch_times.append(time.monotonic())
                    provider._changed.notify_all()
                provider.entered.set()
                provider.hold.wait(30)
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                body = provider.body or json.dumps({"keys": [k.jwk for k in provider.keys]}).encode()
                try:
                    self.send_response(provider.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (timeout tests)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="idp", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{JWKS_PATH}"

    def start(self) -> IdentityProvider:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def env(self, **extra: str) -> dict[str, str]:
        """The SWITCHBOARD_ variables of a replica that accepts this provider's tokens."""
        return {
            "SWITCHBOARD_AUTH_JWKS_URL": self.url,
            "SWITCHBOARD_AUTH_JWKS_ISSUER": ISSUER,
            "SWITCHBOARD_AUTH_JWKS_AUDIENCE": AUDIENCE,
            **extra,
        }
