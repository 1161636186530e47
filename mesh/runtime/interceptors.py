"""What every RPC of every service goes through, from the runner's one server interceptor.

From the outside in, each unary-unary call gets:

* admission (`mesh.runtime.admission`): beyond the app's limit of calls in flight (for its
  class of method) it is refused at once, UNAVAILABLE and marked not applied, before any
  other work; the refusal is counted in the RED metrics and in `shop_rpc_refused_total`;
* its deadline kept for the calls it makes (`mesh.runtime.deadlines`); one whose deadline has
  already passed is refused unstarted;
* a server span (`mesh.runtime.telemetry.traced`), outermost, so it covers and records the
  errors below; the caller's trace context is continued;
* RED metrics: counted by the status code it ended with, and timed (`mesh.runtime.metrics`);
* AIP-193 errors: a `ServiceError` becomes its status with details, any other exception
  a bare INTERNAL status (the traceback goes to the service's log, never to the caller);
  a REST client's field violations name its fields by their JSON names
  (`mesh.runtime.json_names`), a gRPC client's by their proto names;
* validation from the proto declarations (`mesh.runtime.validation`): a request that breaks
  them is refused with INVALID_ARGUMENT and `BadRequest` details before the servicer
  sees it;
* the call's subject and request marked for the code that serves it
  (`mesh.runtime.caller.serving`), which the request log reads (AIP-155);
* innermost, for a read the edge fetches to cache, its answer's entity tag and lifetime
  sent with it (`mesh.runtime.cacheable`).

A request whose bytes are not a message of its method's type (corrupt protobuf, a string
that is not UTF-8) is INVALID_ARGUMENT, saying only that, on every method, streaming
ones included: gRPC's own answer (UNKNOWN, with the decoder's exception in its message)
never reaches the caller.

`MeshInterceptor` builds these layers around a method's handler once, on its first call,
and hands out the same wrapped handler from then on: a call pays for the layers' work,
not for building them. Every RPC of the shop's contracts is unary; streaming methods
(health `Watch`, reflection) get only the refusal of undecodable requests.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from mesh.runtime import admission, cacheable, caller, deadlines, json_names, metrics, telemetry
from mesh.runtime.errors import (
    STATUS_DETAILS_KEY,
    InvalidArgument,
    ServiceError,
    internal_status,
    to_status,
)
from mesh.runtime.telemetry import Behavior
from mesh.runtime.validation import validate

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    _Context = grpc.aio.ServicerContext[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
    _Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]]


class MeshInterceptor(grpc.aio.ServerInterceptor):
    """Every unary-unary method in the mesh's layers (see the module docstring)."""

    def __init__(self, limits: admission.Limits | None = None) -> None:
        #: Wrapped handlers by method; only methods the server has (a finite set).
        self._wrapped: dict[str, _Handler] = {}
        self._gates = admission.Gates(limits or admission.Limits())

    async def intercept_service(
        self, continuation: _Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> _Handler | None:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None
            wrapped = _wrap(handler, method, self._gates.of(method))
            self._wrapped[method] = wrapped
        return wrapped


class _Undecodable:
    """What a request becomes whose bytes are not a message of its method's type."""


_UNDECODABLE = _Undecodable()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, answering `_UNDECODABLE` where it would raise on bad bytes."""
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return _UNDECODABLE

    return decode


def _undecodable() -> InvalidArgument:
    return InvalidArgument(
        message="the request could not be decoded: its bytes are not a message of the "
        "method's request type",
        reason="MALFORMED_REQUEST",
    )


def _wrap(handler: _Handler, method: str, gates: tuple[admission.Gate, ...]) -> _Handler:
    """`handler` with its unary-unary behavior in the mesh's layers, or a streaming one
    refusing undecodable requests."""
    if handler.request_streaming or handler.response_streaming:
        return _streaming(handler, method)
    behavior = cast(Behavior, handler.unary_unary)
    layers = (
        cacheable.marked, _served, _validated, _mapped_errors, _measured, telemetry.traced,
        deadlines.served,
    )  # fmt: skip
    for layer in layers:
        behavior = layer(behavior, method)
    if gates:  # the platform's own methods (health) pass no gate
        behavior = _admitted(behavior, method, gates)
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=_tolerant(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


def _streaming(handler: _Handler, method: str) -> _Handler:
    """A streaming `handler` whose undecodable requests end the call with INVALID_ARGUMENT
    (the status `_mapped_errors` gives, without the unary layers). Its behavior may be an
    async generator or a coroutine writing through its context; the wrapper is an async
    generator for a streamed response, a coroutine for a single one, as gRPC tells them
    apart by the function's kind."""
    status = to_status(_undecodable(), _domain(method))
    behavior: Any = handler.unary_stream or handler.stream_unary or handler.stream_stream

    async def received(requests: AsyncIterator[Any], context: _Context) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, _Undecodable):
                await _abort(context, status)
            yield request

    def given(request: Any, context: _Context) -> Any:
        """What `behavior` takes: the request, or the stream of them checked one by one."""
        return received(request, context) if handler.request_streaming else request

    async def responses(request: Any, context: _Context) -> AsyncIterator[Any]:
        if isinstance(request, _Undecodable):
            await _abort(context, status)
        produced = behavior(given(request, context), context)
        if inspect.isasyncgen(produced):
            async for response in produced:
                yield response
        else:
            await produced

    async def response(requests: Any, context: _Context) -> Any:
        return await behavior(given(requests, context), context)

    if not handler.response_streaming:
        make: Any = grpc.stream_unary_rpc_method_handler
        wrapped: Any = response
    else:
        make = (
            grpc.stream_stream_rpc_method_handler
            if handler.request_streaming
            else grpc.unary_stream_rpc_method_handler
        )
        wrapped = responses
    return cast(
        "_Handler",
        make(
            wrapped,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        ),
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


def _admitted(behavior: Behavior, method: str, gates: tuple[admission.Gate, ...]) -> Behavior:
    """Calls beyond a gate's limit refused unstarted; see `mesh.runtime.admission`."""
    status = admission.refusal(_domain(method))
    trailers = (
        (admission.NOT_APPLIED_HEADER, "1"),
        (STATUS_DETAILS_KEY, status.SerializeToString()),
    )
    refused = metrics.REFUSED.labels(method)

    async def call(request: Any, context: _Context) -> Any:
        if any(gate.full for gate in gates):
            refused.inc()
            metrics.observe_rpc(method, "UNAVAILABLE", 0.0)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, status.message, trailing_metadata=trailers
            )
        for gate in gates:
            gate.in_flight += 1
        try:
            return await behavior(request, context)
        finally:
            for gate in gates:
                gate.in_flight -= 1

    return call


def _mapped_errors(behavior: Behavior, method: str) -> Behavior:
    """Exceptions turned into statuses; see the module docstring."""
    domain = _domain(method)

    async def call(request: Any, context: _Context) -> Any:
        try:
            return await behavior(request, context)
        except ServiceError as error:
            if error.__cause__ is not None:  # what failed underneath is the operator's to see
                log.warning("%s: %s, from %r", method, error.reason, error.__cause__)
            if deadlines.ran_out(error.__cause__):
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, deadlines.RAN_OUT)
            await _abort(context, to_status(_in_clients_words(error, request, context), domain))
        except grpc.aio.AbortError:
            raise  # the servicer aborted on purpose; its status stands
        except Exception:
            log.exception("unhandled error in %s", method)
            await _abort(context, internal_status(domain))

    return call


def _in_clients_words(error: ServiceError, request: Any, context: _Context) -> ServiceError:
    """`error` with its field paths as the client names fields: by JSON names when the
    edge transcoded the call from REST. Looked at only for a call that fails with them, so
    a call that succeeds pays nothing for it."""
    if not (isinstance(error, InvalidArgument) and error.violations):
        return error
    if not json_names.from_rest_client(context.invocation_metadata()):
        return error
    return error.renamed(functools.partial(json_names.json_path, request))


def _validated(behavior: Behavior, method: str) -> Behavior:
    """Requests that break their proto declarations refused; see the module docstring."""

    async def call(request: Message | _Undecodable, context: _Context) -> Any:
        if isinstance(request, _Undecodable):
            raise _undecodable()
        violations = validate(request)
        if violations:
            raise InvalidArgument.of(violations)
        return await behavior(request, context)

    return call


def _served(behavior: Behavior, method: str) -> Behavior:
    """The handler run as serving the call's subject and request (`mesh.runtime.caller`)."""

    async def call(request: Message, context: _Context) -> Any:
        with caller.serving(caller.caller_subject(context), request):
            return await behavior(request, context)

    return call


def _measured(behavior: Behavior, method: str) -> Behavior:
    """Every call counted and timed, by the status code it ended with (`mesh.runtime.metrics`)."""

    async def call(request: Any, context: _Context) -> Any:
        start = time.perf_counter()
        failed = False
        try:
            return await behavior(request, context)
        except BaseException:
            failed = True
            raise
        finally:
            metrics.observe_rpc(method, _status_name(context, failed), time.perf_counter() - start)

    return call


def _status_name(context: _Context, failed: bool) -> str:
    """The name of the status code a call ended with."""
    code = context.code()
    if code is None:
        return "UNKNOWN" if failed else "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)
