"""Random input against every RPC of the running mesh (hypothesis), the session's mesh.

Over native gRPC, every method of every service gets random bytes at its app; over
REST, every operation of the edge's OpenAPI document gets random path and query values
and random JSON bodies (objects with the operation's own field names, and anything
else). No answer may be INTERNAL, UNKNOWN or a 5xx, nor carry an exception's text.
The examples are derived from a fixed seed, so a failure repeats; each method gets a
bounded number of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.control.api import Api
from mesh.control.contracts import DESCRIPTOR_SET
from mesh.runtime.caller import SUBJECT_METADATA_KEY
from tests.support.mesh import ROOT, RunningMesh, leaks_nothing

pytestmark = pytest.mark.integration

#: Examples per method and transport: about 30 methods, 2 transports, a few ms each.
EXAMPLES = 40
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: What no answer may be.
BROKEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

API = Api.from_descriptor_set(ROOT / DESCRIPTOR_SET)
METHODS = sorted(
    (service, method.path) for service, methods in API.methods.items() for method in methods
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def apps(mesh: RunningMesh) -> dict[str, str]:
    """Each service's first app address (plaintext gRPC on loopback)."""
    found: dict[str, str] = {}
    for instance in mesh.state()["instances"]:
        found.setdefault(instance["service"], f"127.0.0.1:{instance['app_port']}")
    return found


@pytest.fixture(scope="module")
def edge(mesh: RunningMesh) -> Iterator[httpx.Client]:
    scopes = ("catalog:write", "inventory:write", "orders:read", "orders:write")
    token = mesh.token("fuzzer", *scopes)
    headers = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=mesh.edge_url, headers=headers, timeout=30) as client:
        yield client


def _answer(call: Any, request: bytes) -> tuple[grpc.StatusCode, str]:
    """The status code and message a call of `request` ends with."""
    try:
        call(request, timeout=10, metadata=((SUBJECT_METADATA_KEY, "fuzzer"),))
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize(("service", "path"), METHODS, ids=[p for _, p in METHODS])
def test_random_bytes_over_grpc_are_never_answered_with_internal_or_unknown(
    apps: dict[str, str], service: str, path: str
) -> None:
    with grpc.insecure_channel(apps[service]) as channel:
        call: Any = channel.unary_unary(path)

        @FUZZ
        @given(st.binary(max_size=300))
        def answered(request: bytes) -> None:
            code, details = _answer(call, request)
            assert code not in BROKEN, (request, details)
            leaks_nothing(details)

        answered()


def _body(fields: list[str]) -> st.SearchStrategy[Any]:
    """Random JSON, often an object with the operation's own field names."""
    if not fields:
        return JSON
    return st.one_of(st.fixed_dictionaries({}, optional=dict.fromkeys(fields, JSON)), JSON)


def _fields(operation: dict[str, Any], schemas: dict[str, Any]) -> list[str]:
    """The top-level field names of the operation's request body, if it has one."""
    schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    reference = schema.get("schema", {}).get("$ref", "")
    resolved = schemas.get(reference.rsplit("/", 1)[-1], {}) if reference else {}
    return sorted(resolved.get("properties", {}))


def _query_names(operation: dict[str, Any]) -> list[str]:
    return [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]


def _filled(template: str, value: str) -> str:
    """`template` with each `{parameter}` replaced by `value`."""
    parts = template.split("{")
    return parts[0] + "".join(value + part.split("}", 1)[1] for part in parts[1:])


def _fuzz(edge: httpx.Client, verb: str, template: str, operation: dict[str, Any],
          schemas: dict[str, Any]) -> None:  # fmt: skip
    """Random path values, query parameters and bodies for one operation."""
    names = _query_names(operation)
    queries = (
        st.dictionaries(st.sampled_from(names), st.text(max_size=20)) if names else st.just({})
    )

    @FUZZ
    @given(st.text(min_size=1, max_size=30), queries, _body(_fields(operation, schemas)))
    def answered(path_value: str, query: dict[str, str], body: Any) -> None:
        url = _filled(template, quote(path_value, safe=""))
        sent = {"json": body} if verb in {"post", "patch", "put"} else {}
        response = edge.request(verb.upper(), url, params=query, **sent)
        assert response.status_code < 500, (verb, url, query, body, response.text)
        leaks_nothing(response.text)

    answered()


def test_random_json_over_rest_is_never_answered_with_a_5xx(edge: httpx.Client) -> None:
    document = edge.get("/openapi.json").json()
    operations = [
        (verb, path, operation)
        for path, item in sorted(document["paths"].items())
        for verb, operation in sorted(item.items())
        if verb in {"get", "post", "patch", "delete", "put"}
    ]
    assert len(operations) >= 20
    for verb, template, operation in operations:
        _fuzz(edge, verb, template, operation, document["components"]["schemas"])
