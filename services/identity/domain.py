"""Identity's domain: user accounts and the rules an account must follow."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from mesh.runtime.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)

MIN_PASSWORD_LENGTH = 8
#: scrypt reads the whole password; a ceiling keeps one request from costing much more.
MAX_PASSWORD_LENGTH = 1024
MAX_EMAIL_LENGTH = 254
MAX_DISPLAY_NAME_LENGTH = 200

#: What a newly registered customer may do; other scopes are granted by the shop.
DEFAULT_SCOPES = ("orders:read", "orders:write", "catalog:read")

#: One `@`, no whitespace, and a dot in the domain: a syntax check, not a deliverability one.
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


@dataclass(frozen=True)
class User:
    """A customer account; `password_hash` never leaves the service."""

    id: str
    email: str
    display_name: str
    scopes: tuple[str, ...]
    create_time: datetime
    password_hash: str = field(repr=False)


def normalised_email(email: str) -> str:
    """The form an email is stored and looked up in: trimmed and lower case."""
    return email.strip().lower()


def email_taken(email: str) -> AlreadyExists:
    return AlreadyExists(
        f"the email {email!r} is already registered",
        reason="EMAIL_TAKEN",
        metadata={"email": email},
    )


def invalid_credentials() -> Unauthenticated:
    # The same error for an unknown email and a wrong password: which one is wrong is
    # exactly what someone guessing accounts wants to learn.
    return Unauthenticated("the email or the password is wrong", reason="INVALID_CREDENTIALS")


def missing_caller() -> Unauthenticated:
    return Unauthenticated("the request carries no authenticated caller", reason="NO_CALLER")


def user_not_found(user_id: str) -> NotFound:
    return NotFound(
        f"user {user_id!r} does not exist",
        reason="USER_NOT_FOUND",
        metadata={"user_id": user_id},
    )


def registration_violations(email: str, password: str, display_name: str) -> list[FieldViolation]:
    """Everything wrong with a registration, so a client can fix it in one go."""
    problems = []
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email):
        problems.append(
            FieldViolation("email", "The email must be an address such as ada@example.com.")
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(
            FieldViolation(
                "password", f"The password must be at least {MIN_PASSWORD_LENGTH} characters."
            )
        )
    elif len(password) > MAX_PASSWORD_LENGTH:
        problems.append(
            FieldViolation(
                "password", f"The password must be at most {MAX_PASSWORD_LENGTH} characters."
            )
        )
    if len(display_name) > MAX_DISPLAY_NAME_LENGTH:
        problems.append(
            FieldViolation(
                "display_name",
                f"The display name must be at most {MAX_DISPLAY_NAME_LENGTH} characters.",
            )
        )
    return problems


def check_registration(email: str, password: str, display_name: str) -> None:
    """Raise INVALID_ARGUMENT naming every field of a registration that breaks a rule."""
    problems = registration_violations(email, password, display_name)
    if problems:
        raise InvalidArgument.of(problems)


def new_user(*, email: str, display_name: str, password_hash: str, now: datetime) -> User:
    """A new account with a fresh id and the default scopes; inputs are already checked."""
    return User(
        id=str(uuid.uuid4()),
        email=email,
        display_name=display_name,
        scopes=DEFAULT_SCOPES,
        create_time=now,
        password_hash=password_hash,
    )
