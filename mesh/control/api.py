"""The shop's RPCs and events as the mesh needs to know them, read from the generated
descriptor set.

Sidecars route and retry per method, and authorize the edge per method, so the mesh reads
from the contracts, never from a hand-kept list: each RPC's gRPC path, its
`idempotency_level` (which decides whether a retry may repeat a request that might have
been applied), whether it is INTERNAL (`google.api.method_visibility`), which keeps it
away from the edge, and the URLs of its HTTP GET bindings (`google.api.http`), the reads
the edge may cache; and the events a service may consume, the payloads of
`shop.events.v1.EventEnvelope`.

A service may serve its API in more than one version side by side (`shop.catalog.v1`
and `shop.catalog.v2`), each a package of the same service, so the same method name may
name a method in each. mesh.yaml names methods as `<service>.<Method>`, and such a name
means the method of that name in every version of the service's API that has it: the
policies written for `catalog.GetProduct` (public at the edge, a scope, a caller's
grant, a timeout) hold for `/shop.catalog.v1.CatalogService/GetProduct` and
`/shop.catalog.v2.CatalogService/GetProduct` alike. A version that means something else
by a name must give its method another name.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2, visibility_pb2
from google.protobuf import descriptor_pb2

#: Our contracts' packages are `shop.<service>.<version>` (`shop.catalog.v1`).
_PACKAGE_PREFIX = "shop."
#: The message whose `payload` oneof holds every event, each a field named in snake case
#: (`order_placed`), as the last part of the event's subject.
_ENVELOPE_PACKAGE, _ENVELOPE, _PAYLOAD = "shop.events.v1", "EventEnvelope", "payload"


class Idempotency(enum.Enum):
    """How safe it is to send a method's request again."""

    NO_SIDE_EFFECTS = "no_side_effects"
    IDEMPOTENT = "idempotent"
    UNKNOWN = "unknown"

    @property
    def retry_safe(self) -> bool:
        """Whether a request that may already have been applied may be sent again."""
        return self is not Idempotency.UNKNOWN


_LEVELS = {
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS: Idempotency.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT: Idempotency.IDEMPOTENT,
    descriptor_pb2.MethodOptions.IDEMPOTENCY_UNKNOWN: Idempotency.UNKNOWN,
}


@dataclass(frozen=True)
class Method:
    """One RPC: `/shop.catalog.v1.CatalogService/GetProduct` and what is known of it."""

    path: str
    idempotency: Idempotency
    internal: bool
    http_gets: tuple[str, ...] = ()
    """The URL templates of its HTTP GET bindings, main and additional (`/v1/products/{id}`)."""

    @property
    def name(self) -> str:
        """The method's own name: `GetProduct`."""
        return self.path.rsplit("/", 1)[1]

    @property
    def package(self) -> str:
        """The package of the API version it belongs to: `shop.catalog.v1`."""
        return self.path.split("/")[1].rpartition(".")[0]


@dataclass(frozen=True)
class Api:
    """Every RPC of every service, by the service's short name (`catalog`, `orders`, ...)."""

    methods: Mapping[str, tuple[Method, ...]]
    events: frozenset[str] = frozenset()
    """The events of the contracts, by their payload field's name (`order_placed`)."""

    def of(self, service: str) -> tuple[Method, ...]:
        return self.methods.get(service, ())

    def public(self, service: str) -> tuple[Method, ...]:
        """The methods the edge may call: every one not marked INTERNAL."""
        return tuple(m for m in self.of(service) if not m.internal)

    def named(self, service: str, names: Collection[str]) -> tuple[Method, ...]:
        """The methods of `service` called `names`, which `mesh.control.conformance`
        found in the contracts: each name's method in every API version that has it."""
        wanted = frozenset(names)
        return tuple(m for m in self.of(service) if m.name in wanted)

    def names(self, service: str, *, public: bool = False) -> list[str]:
        """The method names of `service` (of its public methods, if `public`), sorted,
        each once however many API versions have it."""
        methods = self.public(service) if public else self.of(service)
        return sorted({m.name for m in methods})

    @classmethod
    def from_descriptor_set(cls, path: Path) -> Api:
        files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
        methods: dict[str, list[Method]] = {}
        for file in files:
            if not file.package.startswith(_PACKAGE_PREFIX) or not file.service:
                continue
            service_name = file.package.split(".")[1]
            for service in file.service:
                for method in service.method:
                    visibility = method.options.Extensions[visibility_pb2.method_visibility]
                    methods.setdefault(service_name, []).append(
                        Method(
                            path=f"/{file.package}.{service.name}/{method.name}",
                            idempotency=_LEVELS[method.options.idempotency_level],
                            internal=visibility.restriction == "INTERNAL",
                            http_gets=_http_gets(method.options),
                        )
                    )
        return cls({name: tuple(found) for name, found in methods.items()}, _event_names(files))


def _http_gets(options: descriptor_pb2.MethodOptions) -> tuple[str, ...]:
    """The URL templates of a method's HTTP GET bindings (none without `google.api.http`)."""
    if not options.HasExtension(annotations_pb2.http):
        return ()
    rule = options.Extensions[annotations_pb2.http]
    return tuple(binding.get for binding in (rule, *rule.additional_bindings) if binding.get)


def _event_names(files: Sequence[descriptor_pb2.FileDescriptorProto]) -> frozenset[str]:
    """The fields of `EventEnvelope`'s `payload` oneof: one per event."""
    envelopes = [
        message
        for file in files
        if file.package == _ENVELOPE_PACKAGE
        for message in file.message_type
        if message.name == _ENVELOPE
    ]
    for envelope in envelopes:
        oneofs = [oneof.name for oneof in envelope.oneof_decl]
        if _PAYLOAD in oneofs:
            index = oneofs.index(_PAYLOAD)
            return frozenset(
                f.name
                for f in envelope.field
                if f.HasField("oneof_index") and f.oneof_index == index
            )
    return frozenset()
