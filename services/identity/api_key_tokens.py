"""API keys as signed tokens: the elliptic-curve key that signs them, and the signing.

A key is a compact JWT signed with ES256 by a signing key of its own, apart from the RSA
keys of access tokens (`tokens`): it lives as long as the keys it signed, so a rotation of
the access-token keys never drops it, and ES256 keeps a key short (about 330 characters
where RS256 takes about 520). Its public half is published in the same JWKS as the
access-token keys (`GetJwks`), so the edge verifies keys with the key set it fetches
already. The audience (`shop-api-keys`, not the access tokens' `shop`) keeps a key from
passing as an access token, and an access token from passing as a key.

Signatures are deterministic (RFC 6979): the same claims signed with the same key give
the same key, so a retried CreateApiKey hands back the key it issued, signed again from
the stored claims and checked against the stored SHA-256, without the key being stored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from jwt.utils import der_to_raw_signature

from services.identity.api_keys import ApiKeyGrant
from services.identity.tokens import base64url_uint, pkcs8_pem, thumbprint

ALGORITHM = "ES256"
CURVE = "P-256"
#: The bytes of a P-256 coordinate.
_COORDINATE_BYTES = 32


class _DeterministicES256(ECAlgorithm):
    """ES256 with RFC 6979 nonces: one signature per key and message."""

    def sign(self, msg: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
        signature = key.sign(msg, ec.ECDSA(self.hash_alg(), deterministic_signing=True))
        return der_to_raw_signature(signature, key.curve)


_JWS = jwt.PyJWS(algorithms=[])
_JWS.register_algorithm(ALGORITHM, _DeterministicES256(ECAlgorithm.SHA256))


@dataclass(frozen=True)
class ApiKeySigningKey:
    """One P-256 key pair that signs API keys; `kid` is its RFC 7638 thumbprint."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey
    create_time: datetime

    @classmethod
    def of(cls, private_key: ec.EllipticCurvePrivateKey, create_time: datetime) -> ApiKeySigningKey:
        return cls(thumbprint(_public_members(private_key)), private_key, create_time)

    @classmethod
    def generate(cls, now: datetime) -> ApiKeySigningKey:
        return cls.of(ec.generate_private_key(ec.SECP256R1()), now)

    @classmethod
    def from_pem(cls, pem: str, create_time: datetime) -> ApiKeySigningKey:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("an API key signing key must be a P-256 private key")
        return cls.of(key, create_time)

    def private_pem(self) -> str:
        return pkcs8_pem(self.private_key)

    def jwk(self) -> dict[str, str]:
        """The public half as a JSON Web Key (RFC 7517, RFC 7518 section 6.2)."""
        members = _public_members(self.private_key)
        return {"kid": self.kid, "use": "sig", "alg": ALGORITHM, **members}


def _public_members(private_key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """The required members of the public key's JWK, as its thumbprint takes them."""
    numbers = private_key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": CURVE,
        "x": base64url_uint(numbers.x, _COORDINATE_BYTES),
        "y": base64url_uint(numbers.y, _COORDINATE_BYTES),
    }


class ApiKeySigner:
    """Signs API keys with the newest signing key; publishes every key that verifies one."""

    def __init__(self, keys: Sequence[ApiKeySigningKey], issuer: str, audience: str) -> None:
        if not keys:
            raise ValueError("an API key signer needs at least one signing key")
        self._keys = {key.kid: key for key in sorted(keys, key=lambda key: key.create_time)}
        self.issuer = issuer
        self.audience = audience

    @property
    def active_kid(self) -> str:
        return next(reversed(self._keys))

    def sign(self, grant: ApiKeyGrant, kid: str | None = None) -> str | None:
        """The key of `grant`, signed with the key `kid` names (the newest by default);
        None when no such signing key is kept."""
        key = self._keys.get(kid or self.active_kid)
        if key is None:
            return None
        payload = json.dumps(self.claims(grant), separators=(",", ":"), sort_keys=True)
        return _JWS.encode(
            payload.encode(), key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid}
        )

    def claims(self, grant: ApiKeyGrant) -> dict[str, object]:
        """The claims of `grant`'s key: those of an access token, with `plan`, and the key
        id as `jti`."""
        return {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": grant.subject,
            "scope": " ".join(grant.scopes),
            "plan": grant.plan,
            "jti": grant.id,
            "iat": int(grant.create_time.timestamp()),
            "exp": int(grant.expire_time.timestamp()),
        }

    def jwks(self) -> list[dict[str, str]]:
        """The public keys, as `keys` of a JWKS document."""
        return [key.jwk() for key in self._keys.values()]
