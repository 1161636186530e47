"""The edge's deny list of API keys: the keys identity revoked, which the edge refuses.

An API key is a signed token (`services.identity.api_key_tokens`), so its signature still
verifies after it is revoked; the edge refuses it by its id (`jti`) instead, with an RBAC
filter it reads from a file (`edge_filters.revocations`) and reads again, within
milliseconds, each time a new file is renamed into that file's directory. The edge
companion keeps the file current (`follow`): every `POLL_SECONDS` it asks identity's
internal ListRevokedApiKeys for the whole list, through a loopback-only listener of the
edge (`EdgePlan.deny_list_port`) that calls identity as the edge, over mTLS, and writes a
new file when the list changed. So a revoked key stops working within about a second
and a half. The list holds only keys not yet expired, so it stays bounded.

The file is there before the edge starts (the edge cannot start without it): written by
whoever prepares the edge (the supervisor, `meshctl render edge-files`) to refuse every
API key until the companion has read identity's list. If identity cannot be asked, the
last list stays in force.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from pathlib import Path

import grpc

from mesh.control.envoy.edge_filters import DENY_LIST_FILE, REVOCATIONS, revoked_keys_rbac
from mesh.control.state import write_json_atomically
from shop.identity.v1 import identity_service_pb2 as identity_pb
from shop.identity.v1 import identity_service_pb2_grpc as identity_grpc

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
#: The largest page identity answers.
PAGE_SIZE = 100
CALL_TIMEOUT_SECONDS = 5.0
_EXTENSION = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"


def write(directory: Path, revoked: Collection[str] | None) -> None:
    """The deny list refusing the API keys `revoked`, renamed into `directory` whole;
    None: every API key, until identity's list is read (the edge needs a file to start)."""
    resource = {
        "@type": _EXTENSION,
        "name": REVOCATIONS,
        "typed_config": revoked_keys_rbac(revoked),
    }
    write_json_atomically(directory / DENY_LIST_FILE, {"resources": [resource]})


async def revoked(stub: identity_grpc.IdentityServiceStub) -> frozenset[str]:
    """The ids of every revoked API key that has not expired, page by page."""
    ids: set[str] = set()
    token = ""
    while True:
        request = identity_pb.ListRevokedApiKeysRequest(page_size=PAGE_SIZE, page_token=token)
        page = await stub.ListRevokedApiKeys(request, timeout=CALL_TIMEOUT_SECONDS)
        ids.update(key.id for key in page.revoked_api_keys)
        token = page.next_page_token
        if not token:
            return frozenset(ids)


async def follow(port: int, directory: Path) -> None:
    """Keep the deny list in `directory` what identity says, asking it through the edge's
    deny-list listener on loopback `port`; runs until cancelled."""
    written: frozenset[str] | None = None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = identity_grpc.IdentityServiceStub(channel)
        while True:
            try:
                current = await revoked(stub)
            except grpc.aio.AioRpcError as error:
                log.warning("the deny list of API keys: %s %s", error.code().name, error.details())
            else:
                if current != written:
                    write(directory, current)
                    log.info("the deny list of API keys: %d revoked", len(current))
                    written = current
            await asyncio.sleep(POLL_SECONDS)
