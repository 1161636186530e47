"""Errors a service raises, and how they travel as gRPC statuses (Google AIP-193).

Domain and handler code raise one of the `ServiceError` subclasses below; it never
touches gRPC. The runner's error interceptor turns the exception into a canonical status
code plus a `google.rpc.Status` carrying an `ErrorInfo` (an UPPER_SNAKE `reason`, the
service's `domain`, and metadata) and, for bad input, a `BadRequest` listing every field
violation. The status travels in the `grpc-status-details-bin` trailer, where grpcurl,
`grpc_status.rpc_status.from_call` and Envoy's `convert_grpc_status` find it.

Violations name fields by their proto paths (`shipping_address.address_lines[0]`); the
interceptor renames them for a REST client (`mesh.runtime.json_names`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

#: The trailer gRPC defines for a serialized `google.rpc.Status`.
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One thing wrong with one field of a request (a `BadRequest.FieldViolation`)."""

    field: str
    """The path of the field in the request, e.g. `lines[0].quantity`."""
    description: str
    """A sentence saying what is wrong and what would be right."""
    reason: str = "INVALID_FIELD"
    """An UPPER_SNAKE identifier of the kind of violation, e.g. `REQUIRED`."""


@dataclass(eq=False)
class ServiceError(Exception):
    """A failure to report to the caller; subclasses fix the canonical status code."""

    message: str
    reason: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    code = grpc.StatusCode.UNKNOWN

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def details(self) -> list[any_pb2.Any]:
        """Extra status details beyond the `ErrorInfo` every error carries."""
        return []


@dataclass(eq=False)
class InvalidArgument(ServiceError):
    """The request is malformed: it names every offending field."""

    violations: Sequence[FieldViolation] = ()
    reason: str = "INVALID_ARGUMENT"
    code = grpc.StatusCode.INVALID_ARGUMENT

    @classmethod
    def of(cls, violations: Sequence[FieldViolation]) -> InvalidArgument:
        """An error whose message summarises `violations`."""
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        return cls(message=f"invalid request: {summary}", violations=violations)

    def renamed(self, rename: Callable[[str], str]) -> InvalidArgument:
        """This error with every field path as `rename` gives it: each violation's field,
        and the same path where a description or the message quotes it."""
        names = {v.field: rename(v.field) for v in self.violations}
        names = {old: new for old, new in names.items() if old != new}
        if not names:
            return self
        quoted = _quoted_paths(names)

        def reworded(text: str) -> str:
            return quoted.sub(lambda found: names[found[0]], text)

        violations = [
            FieldViolation(names.get(v.field, v.field), reworded(v.description), v.reason)
            for v in self.violations
        ]
        return dataclasses.replace(self, message=reworded(self.message), violations=violations)

    def details(self) -> list[any_pb2.Any]:
        if not self.violations:
            return []
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description, reason=v.reason
                )
                for v in self.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        return [packed]


def _quoted_paths(paths: Iterable[str]) -> re.Pattern[str]:
    """Any of `paths` where a text quotes it whole: not as a part of a longer path (a name
    going on, an index or a field after it), though a sentence's full stop may follow."""
    longest_first = sorted(paths, key=len, reverse=True)
    alternatives = "|".join(re.escape(path) for path in longest_first)
    return re.compile(rf"(?<![\w.\]])(?:{alternatives})(?![\w\[]|\.\w)")


@dataclass(eq=False)
class NotFound(ServiceError):
    """The named resource does not exist (or the caller may not know it exists)."""

    code = grpc.StatusCode.NOT_FOUND


@dataclass(eq=False)
class AlreadyExists(ServiceError):
    """The resource the caller tried to create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


@dataclass(eq=False)
class FailedPrecondition(ServiceError):
    """The system is not in a state in which the request can be done (e.g. out of stock)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


@dataclass(eq=False)
class OutOfRange(ServiceError):
    """The request is well formed, but what it asks for lies past a limit the system can
    hold (an order total past the largest amount)."""

    code = grpc.StatusCode.OUT_OF_RANGE


@dataclass(eq=False)
class Aborted(ServiceError):
    """A concurrency conflict: the caller may retry the whole read-modify-write."""

    code = grpc.StatusCode.ABORTED


@dataclass(eq=False)
class Unauthenticated(ServiceError):
    """The caller's credentials are missing or wrong."""

    code = grpc.StatusCode.UNAUTHENTICATED


@dataclass(eq=False)
class PermissionDenied(ServiceError):
    """The caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


@dataclass(eq=False)
class Unavailable(ServiceError):
    """A transient failure: the same request may succeed if retried."""

    code = grpc.StatusCode.UNAVAILABLE


@dataclass(eq=False)
class ResourceExhausted(ServiceError):
    """A quota of the caller's, or of the service's, is used up: the same request may
    succeed after `retry_after_seconds`, once some of it is free again."""

    subject: str = ""
    """Whose quota (`customer:<id>`, `service:orders`): a `QuotaFailure` violation."""
    retry_after_seconds: float = 1.0
    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> list[any_pb2.Any]:
        quota, retry = any_pb2.Any(), any_pb2.Any()
        quota.Pack(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=self.subject, description=self.message
                    )
                ]
            )
        )
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=self.retry_after_seconds))
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        return [quota, retry]


def to_status(error: ServiceError, domain: str) -> status_pb2.Status:
    """The `google.rpc.Status` for `error`, with `ErrorInfo` first among its details."""
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason=error.reason, domain=domain, metadata=dict(error.metadata)
        )
    )
    return status_pb2.Status(
        code=_CODES[error.code],
        message=error.message,
        details=[info, *error.details()],
    )


def internal_status(domain: str) -> status_pb2.Status:
    """The status for a failure of our own: it says nothing of where or why."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=domain))
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error", details=[info])


#: grpc.StatusCode -> google.rpc.Code number.
_CODES = {code: code.value[0] for code in grpc.StatusCode}
