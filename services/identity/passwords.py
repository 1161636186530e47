"""Password hashes: scrypt, stored as a self-describing string so parameters can change.

A stored hash reads `scrypt$<n>$<r>$<p>$<salt, base64>$<hash, base64>`; verification
takes its parameters from the string, so hashes made with older parameters still verify
after the defaults are raised.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import secrets

SCHEME = "scrypt"
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
#: Enough memory for the default parameters (128 * n * r bytes) with room to spare, and a
#: ceiling that a corrupted stored hash cannot push the process past.
_MAX_MEMORY = 64 * 1024 * 1024


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEMORY, dklen=HASH_BYTES
    )


def hash_password(password: str) -> str:
    """A fresh salted hash of `password`, in the stored form."""
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    encoded = [base64.b64encode(part).decode() for part in (salt, digest)]
    return "$".join([SCHEME, str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), *encoded])


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` is the one `stored` was made from, compared in constant time."""
    scheme, n, r, p, salt, digest = stored.split("$")
    if scheme != SCHEME:
        raise ValueError(f"not an {SCHEME} password hash")
    candidate = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    return hmac.compare_digest(candidate, base64.b64decode(digest))


@functools.cache
def dummy_hash() -> str:
    """A hash no password matches, verified for unknown emails so that a failed sign-in
    takes as long whether or not the email is registered."""
    return hash_password(secrets.token_urlsafe(32))
