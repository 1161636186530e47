"""Identity's gRPC face: protobuf in, command to a handler, protobuf out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from mesh.runtime.caller import caller_subject
from mesh.runtime.errors import FieldViolation, InvalidArgument
from mesh.runtime.timestamps import to_timestamp
from services.identity import handlers
from services.identity.api_keys import ApiKey
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


def api_key_to_proto(key: ApiKey) -> pb.ApiKey:
    grant = key.grant
    return pb.ApiKey(
        id=grant.id,
        consumer=grant.consumer,
        scopes=list(grant.scopes),
        plan=grant.plan,
        key_suffix=key.key_suffix,
        create_time=to_timestamp(grant.create_time),
        expire_time=to_timestamp(grant.expire_time),
        revoke_time=to_timestamp(key.revoke_time) if key.revoke_time else None,
    )


def _time(message: Any, name: str, path: str) -> datetime | None:
    """The timestamp field `name` of `message`, None when it is not set; one outside the
    range a Timestamp may hold (years 1 to 9999) is INVALID_ARGUMENT on `path`."""
    if not message.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, name)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except ValueError:
        raise InvalidArgument.of(
            [FieldViolation(path, "The time must lie between the years 1 and 9999.")]
        ) from None


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(
        self,
        store: IdentityStore,
        signer: TokenSigner,
        token_ttl_seconds: int,
        api_keys: handlers.ApiKeyIssuer,
    ) -> None:
        self._store = store
        self._signer = signer
        self._token_ttl_seconds = token_ttl_seconds
        self._api_keys = api_keys

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
        # The access tokens' keys first, then the API keys'.
        jwks = [*self._signer.jwks(), *self._api_keys.signer.jwks()]
        return pb.GetJwksResponse(keys=[pb.JsonWebKey(**jwk) for jwk in jwks])

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Any
    ) -> pb.CreateApiKeyResponse:
        wanted = request.api_key
        issued = await handlers.create_api_key(
            self._api_keys.store,
            self._api_keys.signer,
            handlers.CreateApiKey(
                consumer=wanted.consumer,
                scopes=tuple(wanted.scopes),
                plan=wanted.plan,
                expire_time=_time(wanted, "expire_time", "api_key.expire_time"),
                request_id=request.request_id,
            ),
        )
        return pb.CreateApiKeyResponse(api_key=api_key_to_proto(issued.record), key=issued.key)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Any
    ) -> pb.ListApiKeysResponse:
        page = await handlers.list_api_keys(
            self._api_keys.store,
            handlers.ListApiKeys(request.consumer, request.page_size, request.page_token),
        )
        return pb.ListApiKeysResponse(
            api_keys=[api_key_to_proto(key) for key in page.keys],
            next_page_token=page.next_page_token,
        )

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Any
    ) -> pb.RevokeApiKeyResponse:
        key = await handlers.revoke_api_key(
            self._api_keys.store, handlers.RevokeApiKey(request.id, request.request_id)
        )
        return pb.RevokeApiKeyResponse(api_key=api_key_to_proto(key))

    async def ListRevokedApiKeys(
        self, request: pb.ListRevokedApiKeysRequest, context: Any
    ) -> pb.ListRevokedApiKeysResponse:
        page = await handlers.list_revoked_api_keys(
            self._api_keys.store,
            handlers.ListRevokedApiKeys(
                _time(request, "revoked_since", "revoked_since"),
                request.page_size,
                request.page_token,
            ),
        )
        revoked = [
            pb.RevokedApiKey(
                id=key.id,
                revoke_time=to_timestamp(key.revoke_time) if key.revoke_time else None,
                expire_time=to_timestamp(key.grant.expire_time),
            )
            for key in page.keys
        ]
        return pb.ListRevokedApiKeysResponse(
            revoked_api_keys=revoked, next_page_token=page.next_page_token
        )
