"""Server interceptors every service gets from the runner.

* `ErrorInterceptor` (outermost) maps a `ServiceError` to its AIP-193 status with
  details, and any other exception to a bare INTERNAL status: the traceback goes to the
  service's log, never to the caller.
* `ValidationInterceptor` refuses a request that breaks its proto declarations (see
  `mesh.validation`) with INVALID_ARGUMENT and `BadRequest` details, before the servicer
  sees it.

* `MetricsInterceptor` (outside both) counts each RPC by its status code and times it
  (`mesh.metrics`).

They wrap unary-unary methods, which is every RPC in the shop's contracts; streaming
methods (health `Watch`, reflection) pass through untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2

from mesh import metrics
from mesh.errors import (
    STATUS_DETAILS_KEY,
    InvalidArgument,
    ServiceError,
    internal_status,
    to_status,
)
from mesh.validation import validate

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    _Context = grpc.aio.ServicerContext[Any, Any]
    _Behavior = Callable[[Any, _Context], Awaitable[Any]]
    _Around = Callable[[_Behavior, Any, _Context], Awaitable[Any]]
    _Handler = grpc.RpcMethodHandler[Any, Any]
    _Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]]


def _wrap_unary(handler: _Handler, around: _Around) -> _Handler:
    """`handler` with its unary-unary behavior run through `around`."""
    if handler.request_streaming or handler.response_streaming or handler.unary_unary is None:
        return handler
    behavior = cast("_Behavior", handler.unary_unary)

    async def wrapped(request: Any, context: _Context) -> Any:
        return await around(behavior, request, context)

    return grpc.unary_unary_rpc_method_handler(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _domain(method: str) -> str:
    """The ErrorInfo domain of a method: its proto package, e.g. `shop.catalog.v1`."""
    service = method.lstrip("/").split("/", 1)[0]
    return service.rpartition(".")[0] or service


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


async def _abort(context: _Context, status: status_pb2.Status) -> None:
    await context.abort(
        _STATUS_CODES[status.code],
        status.message,
        trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
    )


class _UnaryInterceptor(grpc.aio.ServerInterceptor):
    """Runs every unary-unary call of a method through `around(method)`."""

    def around(self, method: str) -> _Around:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: _Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return _wrap_unary(handler, self.around(handler_call_details.method))


class ErrorInterceptor(_UnaryInterceptor):
    """Turns exceptions into statuses; see the module docstring."""

    def around(self, method: str) -> _Around:
        domain = _domain(method)

        async def around(behavior: _Behavior, request: Any, context: _Context) -> Any:
            try:
                return await behavior(request, context)
            except ServiceError as error:
                await _abort(context, to_status(error, domain))
            except grpc.aio.AbortError:
                raise  # the servicer aborted on purpose; its status stands
            except Exception:
                log.exception("unhandled error in %s", method)
                await _abort(context, internal_status(domain))

        return around


class ValidationInterceptor(_UnaryInterceptor):
    """Refuses requests that break their proto declarations; see the module docstring."""

    def around(self, method: str) -> _Around:
        async def around(behavior: _Behavior, request: Message, context: _Context) -> Any:
            violations = validate(request)
            if violations:
                raise InvalidArgument.of(violations)
            return await behavior(request, context)

        return around


class MetricsInterceptor(_UnaryInterceptor):
    """Counts and times every RPC, by the status code it ended with (`mesh.metrics`)."""

    def around(self, method: str) -> _Around:
        async def around(behavior: _Behavior, request: Any, context: _Context) -> Any:
            start = time.perf_counter()
            failed = False
            try:
                return await behavior(request, context)
            except BaseException:
                failed = True
                raise
            finally:
                code = context.code()
                if code is None:
                    name = "UNKNOWN" if failed else "OK"
                else:
                    name = code.name if isinstance(code, grpc.StatusCode) else str(code)
                metrics.observe_rpc(method, name, time.perf_counter() - start)

        return around
