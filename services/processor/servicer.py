"""The processor's gRPC face: protobuf in, command to the handler, protobuf out."""

from __future__ import annotations

from typing import Any

from mesh.runtime.money import Money
from services.processor import handlers
from services.processor.domain import Authorization, Decision
from services.processor.ports import ProcessorStore
from shop.processor.v1 import processor_service_pb2 as pb
from shop.processor.v1 import processor_service_pb2_grpc as pb_grpc

_DECISIONS = {
    Decision.APPROVED: pb.AUTHORIZATION_DECISION_APPROVED,
    Decision.DECLINED: pb.AUTHORIZATION_DECISION_DECLINED,
}


def to_proto(authorization: Authorization) -> pb.AuthorizeResponse:
    return pb.AuthorizeResponse(
        decision=_DECISIONS[authorization.decision],
        decline_reason=authorization.decline_reason,
        authorization_id=authorization.id,
    )


class ProcessorServicer(pb_grpc.ProcessorServiceServicer):
    def __init__(self, store: ProcessorStore) -> None:
        self._store = store

    async def Authorize(self, request: pb.AuthorizeRequest, context: Any) -> pb.AuthorizeResponse:
        authorization = await handlers.authorize(
            self._store,
            handlers.Authorize(
                payment_token=request.payment_token,
                amount=Money.from_request(request.amount, "amount"),
                idempotency_key=request.idempotency_key,
            ),
        )
        return to_proto(authorization)
