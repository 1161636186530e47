"""Identity's gRPC face: protobuf in, command to a handler, protobuf out."""

from __future__ import annotations

from typing import Any

from mesh.runtime.caller import caller_subject
from mesh.runtime.timestamps import to_timestamp
from services.identity import handlers
from services.identity.domain import User
from services.identity.ports import IdentityStore
from services.identity.tokens import TokenSigner
from shop.identity.v1 import identity_service_pb2 as pb
from shop.identity.v1 import identity_service_pb2_grpc as pb_grpc


def to_proto(user: User) -> pb.User:
    return pb.User(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        scopes=list(user.scopes),
        create_time=to_timestamp(user.create_time),
    )


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(self, store: IdentityStore, signer: TokenSigner, token_ttl_seconds: int) -> None:
        self._store = store
        self._signer = signer
        self._token_ttl_seconds = token_ttl_seconds

    async def Register(self, request: pb.RegisterRequest, context: Any) -> pb.RegisterResponse:
        user = await handlers.register(
            self._store,
            handlers.Register(
                email=request.email,
                password=request.password,
                display_name=request.display_name,
                request_id=request.request_id,
            ),
        )
        return pb.RegisterResponse(user=to_proto(user))

    async def Login(self, request: pb.LoginRequest, context: Any) -> pb.LoginResponse:
        session = await handlers.login(
            self._store,
            self._signer,
            self._token_ttl_seconds,
            handlers.Login(email=request.email, password=request.password),
        )
        return pb.LoginResponse(
            access_token=session.access_token,
            token_type=session.token_type,
            expires_in_seconds=session.expires_in_seconds,
            user=to_proto(session.user),
        )

    async def GetCurrentUser(
        self, request: pb.GetCurrentUserRequest, context: Any
    ) -> pb.GetCurrentUserResponse:
        user = await handlers.get_current_user(self._store, caller_subject(context))
        return pb.GetCurrentUserResponse(user=to_proto(user))

    async def GetJwks(self, request: pb.GetJwksRequest, context: Any) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(keys=[pb.JsonWebKey(**jwk) for jwk in self._signer.jwks()])
