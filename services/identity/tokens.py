"""Access tokens: the RSA keys that sign them, the JWTs, and the JWKS that verifies them.

Tokens are RS256 JWTs. Each carries a `kid` header naming its signing key; the key id is
the key's RFC 7638 thumbprint, so it is derived from the key itself and never collides.
Other services verify tokens offline with the public keys of `TokenSigner.jwks()`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

ALGORITHM = "RS256"
RSA_KEY_BITS = 2048
RSA_PUBLIC_EXPONENT = 65537


@dataclass(frozen=True)
class TokenSettings:
    """Who the tokens say issued them, whom they are for, and how long they last; and
    whom API keys are for (`api_key_tokens`), which must not be the tokens' audience."""

    issuer: str = "shop-identity"
    audience: str = "shop"
    ttl_seconds: int = 3600
    api_key_audience: str = "shop-api-keys"


def base64url_uint(number: int, length: int | None = None) -> str:
    """`number` as unpadded base64url of its big-endian bytes (RFC 7518, section 6.3),
    `length` bytes long when given (an elliptic-curve coordinate's is fixed)."""
    raw = number.to_bytes(length or (number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def thumbprint(members: dict[str, str]) -> str:
    """The RFC 7638 thumbprint of a public key's required JWK `members`: the SHA-256 of
    their canonical JSON (sorted, without whitespace), as unpadded base64url."""
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def pkcs8_pem(private_key: PrivateKeyTypes) -> str:
    """A private key as the unencrypted PKCS #8 PEM it is stored in."""
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass(frozen=True)
class SigningKey:
    """One RSA key pair that signs tokens; `kid` is its RFC 7638 thumbprint."""

    kid: str
    private_key: rsa.RSAPrivateKey
    create_time: datetime

    @classmethod
    def of(cls, private_key: rsa.RSAPrivateKey, create_time: datetime) -> SigningKey:
        numbers = private_key.public_key().public_numbers()
        members = {"e": base64url_uint(numbers.e), "kty": "RSA", "n": base64url_uint(numbers.n)}
        return cls(thumbprint(members), private_key, create_time)

    @classmethod
    def generate(cls, now: datetime) -> SigningKey:
        """A fresh 2048-bit key (this takes a noticeable fraction of a second)."""
        key = rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_KEY_BITS)
        return cls.of(key, now)

    @classmethod
    def from_pem(cls, pem: str, create_time: datetime) -> SigningKey:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("a signing key must be an RSA private key")
        return cls.of(key, create_time)

    def private_pem(self) -> str:
        return pkcs8_pem(self.private_key)

    def jwk(self) -> dict[str, str]:
        """The public half as a JSON Web Key (RFC 7517)."""
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "kid": self.kid,
            "use": "sig",
            "alg": ALGORITHM,
            "n": base64url_uint(numbers.n),
            "e": base64url_uint(numbers.e),
        }


class TokenSigner:
    """Signs tokens with the newest key and publishes every key that may verify one."""

    def __init__(self, keys: Sequence[SigningKey], issuer: str, audience: str) -> None:
        if not keys:
            raise ValueError("a token signer needs at least one signing key")
        self._keys = sorted(keys, key=lambda key: key.create_time)
        self.issuer = issuer
        self.audience = audience

    @property
    def active_key(self) -> SigningKey:
        return self._keys[-1]

    def sign(self, claims: dict[str, object]) -> str:
        key = self.active_key
        return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})

    def jwks(self) -> list[dict[str, str]]:
        """The public keys, as the `keys` of a JWKS document."""
        return [key.jwk() for key in self._keys]


def mint_token(
    signer: TokenSigner, subject: str, scopes: Sequence[str], ttl: int, now: float | None = None
) -> str:
    """A signed access token for `subject` with `scopes`, valid for `ttl` seconds."""
    issued = int(time.time() if now is None else now)
    return signer.sign(
        {
            "sub": subject,
            "scope": " ".join(scopes),
            "iss": signer.issuer,
            "aud": signer.audience,
            "iat": issued,
            "exp": issued + ttl,
            "jti": uuid.uuid4().hex,
        }
    )
