"""Consumer-driven contracts: what each consumer relies on from each provider, written down
by the consumer and verified against the provider's real servicer and real events.

`buf breaking` guards the wire: no field is renumbered or retyped. It cannot see a provider
that stops filling a field in, or stops publishing an event, while every message still
parses; the consumer would read zeros. So each consumer says what it reads, one file per
provider, kept with its code at `services/<consumer>/contracts/<provider>.yaml`:

    rpcs:                                  # the calls it makes, each in a provider state
      - method: shop.catalog.v1.CatalogService.BatchGetProducts
        given: the products exist          # what the provider's test sets up first
        request: [ids]                     # the request fields it sets
        response: [products.id, products.price.currency_code, products.price.units]
        may_be_empty: [products.price.units]   # read, and zero is an answer (0.50 EUR)
    events:                                # the events it handles (mesh.yaml `consumes:`)
      orders.order_placed:
        envelope: [order_id]               # of shop.events.v1.EventEnvelope (event_id
                                           # is every consumer's: RUNTIME_ENVELOPE_FIELDS)
        payload: [lines.product_id, lines.quantity]
        may_be_empty: []                   # payload paths read, whose zero is an answer

A path names fields by their proto names, dotted into messages; through a repeated field
it names that field of every element. A path that ends on a message, a list or a map means
all of it. Every path is checked against the generated descriptors as the file loads: a
field the contracts do not have is a `ContractError` naming the file and the path.

Both sides are tested from these files (tests/contracts/). The consumer is handed only what
it declares (`only`, `given_to`) and must do just what it does with whole messages; the
provider's answers and events must fill every declared field (`verify_response`,
`verify_events`), and some flow of the provider must publish each declared event.
`topology_gaps` holds the files to mesh.yaml: every call and every consumed event is
declared, and nothing is declared that the mesh does not route.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from mesh.control.topology import Topology
from shop.events.v1 import events_pb2

#: Where the consumers keep their contracts, from the repository's root.
CONTRACTS_GLOB = "services/*/contracts/*.yaml"
#: What every consumer's runtime reads of every event (`mesh.runtime.consumer`), whatever
#: its handlers read: the event's id, by which it applies each event once. (What it keeps
#: in order by, an order's or an entity's id, a contract lists with the envelope's fields.)
RUNTIME_ENVELOPE_FIELDS = ("event_id",)

_ENVELOPE = cast(Descriptor, events_pb2.EventEnvelope.DESCRIPTOR)
#: The message of each event by its payload field's name (`order_placed`).
_PAYLOADS = {
    field.name: cast(Descriptor, field.message_type)
    for field in _ENVELOPE.oneofs_by_name["payload"].fields
}
_FILE_KEYS = frozenset({"rpcs", "events"})
_RPC_KEYS = frozenset({"method", "given", "request", "response", "may_be_empty"})
_EVENT_KEYS = frozenset({"envelope", "payload", "may_be_empty"})

M = TypeVar("M", bound=Message)
#: Declared paths as a tree of field names; None where a field is kept whole.
_Tree = dict[str, "_Tree | None"]


class ContractError(ValueError):
    """A contract file that says something that cannot be checked; the message names the
    file and the place in it."""


@dataclass(frozen=True)
class Interaction:
    """One call a consumer makes: the method, the provider's state it expects, the request
    fields it sets and the response fields it reads (`may_be_empty`: read, and their zero
    value is an answer the consumer copes with)."""

    method: MethodDescriptor
    given: str
    request: tuple[str, ...]
    response: tuple[str, ...]
    may_be_empty: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        """How failures name it: `BatchGetProducts, given the products exist`."""
        return f"{self.method.name}, given {self.given}"

    @property
    def grpc_path(self) -> str:
        """The method as gRPC calls it: `/shop.catalog.v1.CatalogService/BatchGetProducts`."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def response_type(self) -> type[Message]:
        """The generated class of the method's response, to decode the provider's answer."""
        return message_factory.GetMessageClass(self.method.output_type)


@dataclass(frozen=True)
class ConsumedEvent:
    """One event a consumer handles and the fields it reads: of the envelope, and of the
    payload (`may_be_empty`: payload fields read, whose zero value is an answer)."""

    producer: str
    event: str
    envelope: tuple[str, ...]
    payload: tuple[str, ...]
    may_be_empty: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        """As mesh.yaml's `consumes:` names it: `orders.order_placed`."""
        return f"{self.producer}.{self.event}"

    @property
    def paths(self) -> tuple[str, ...]:
        """Every path the consumer relies on, from the envelope: the runtime's fields, the
        envelope's it reads, then the payload's under the event's field."""
        declared = (*RUNTIME_ENVELOPE_FIELDS, *self.envelope, *self._in_envelope(self.payload))
        return tuple(dict.fromkeys(declared))

    @property
    def may_be_empty_paths(self) -> frozenset[str]:
        """`may_be_empty`, from the envelope."""
        return frozenset(self._in_envelope(self.may_be_empty))

    def _in_envelope(self, payload_paths: Iterable[str]) -> list[str]:
        return [f"{self.event}.{path}" for path in payload_paths]


@dataclass(frozen=True)
class Contract:
    """What `consumer` relies on from `provider`: the calls it makes and the events it
    handles, as written in `source`."""

    consumer: str
    provider: str
    source: Path
    interactions: tuple[Interaction, ...] = ()
    events: tuple[ConsumedEvent, ...] = ()

    def response_paths(self, grpc_path: str) -> tuple[str, ...] | None:
        """The response fields the consumer reads of the method at `grpc_path`, over all its
        interactions with it; None if it declares no call of it."""
        declared = [i.response for i in self.interactions if i.grpc_path == grpc_path]
        if not declared:
            return None
        return tuple(dict.fromkeys(path for paths in declared for path in paths))

    def request_paths(self, grpc_path: str) -> tuple[str, ...]:
        """The request fields the consumer sets in a call of the method at `grpc_path`."""
        declared = (i.request for i in self.interactions if i.grpc_path == grpc_path)
        return tuple(dict.fromkeys(path for paths in declared for path in paths))

    def consumed(self, event: str) -> ConsumedEvent | None:
        """What the consumer reads of the provider's `event` (`order_placed`), if it handles it."""
        return next((e for e in self.events if e.event == event), None)


@dataclass(frozen=True)
class Breach:
    """A provider that does not give a consumer what its contract relies on."""

    contract: Contract
    interaction: str
    problem: str

    def __str__(self) -> str:
        contract = self.contract
        return (
            f"{contract.consumer} relies on {contract.provider}: {self.interaction}: "
            f"{self.problem} (contract {contract.source})"
        )


def load_contracts(root: Path) -> list[Contract]:
    """Every consumer's contracts under the repository at `root`, by consumer then provider."""
    return [load_contract(path) for path in sorted(root.glob(CONTRACTS_GLOB))]


def contracts_on(provider: str, contracts: Iterable[Contract]) -> list[Contract]:
    """The contracts of every consumer of `provider`."""
    return [contract for contract in contracts if contract.provider == provider]


def load_contract(path: Path) -> Contract:
    """The contract at `services/<consumer>/contracts/<provider>.yaml`, every path checked
    against the generated descriptors."""
    consumer, provider = path.parent.parent.name, path.stem
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ContractError(f"{path}: {error}") from None
    reader = _Reader(path)
    reader.keys(document, _FILE_KEYS, "the file")
    rpcs = reader.sequence(document.get("rpcs", []), "rpcs")
    events = reader.mapping(document.get("events", {}), "events")
    return Contract(
        consumer,
        provider,
        path,
        tuple(reader.interaction(entry, provider, f"rpcs[{i}]") for i, entry in enumerate(rpcs)),
        tuple(reader.consumed_event(name, entry, provider) for name, entry in events.items()),
    )


class _Reader:
    """Reads one contract file, each mistake a `ContractError` naming the file and where."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def fail(self, where: str, problem: str) -> ContractError:
        return ContractError(f"{self._path}: {where}: {problem}")

    def mapping(self, value: object, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, "expected a mapping")
        return value

    def sequence(self, value: object, where: str) -> Sequence[Any]:
        if not isinstance(value, list):
            raise self.fail(where, "expected a list")
        return value

    def keys(self, value: object, allowed: frozenset[str], where: str) -> None:
        unknown = sorted(set(self.mapping(value, where)) - allowed)
        if unknown:
            raise self.fail(where, f"unknown key {unknown[0]!r}; expected {sorted(allowed)}")

    def paths(
        self, entry: Mapping[str, Any], key: str, root: Descriptor, where: str
    ) -> tuple[str, ...]:
        """The list at `entry[key]`, each a path of fields of `root`."""
        paths = self.sequence(entry.get(key, []), f"{where}.{key}")
        for path in paths:
            if not isinstance(path, str):
                raise self.fail(f"{where}.{key}", f"{path!r} is not a path")
            problem = field_path_problem(root, path)
            if problem:
                raise self.fail(f"{where}.{key}", f"{path!r}: {problem}")
        return tuple(paths)

    def may_be_empty(
        self, entry: Mapping[str, Any], declared: tuple[str, ...], where: str
    ) -> frozenset[str]:
        """`entry`'s may_be_empty, each one of the `declared` paths it qualifies."""
        listed = self.sequence(entry.get("may_be_empty", []), f"{where}.may_be_empty")
        for path in listed:
            if path not in declared:
                raise self.fail(f"{where}.may_be_empty", f"{path!r} is not a declared path")
        return frozenset(listed)

    def interaction(self, entry: object, provider: str, where: str) -> Interaction:
        self.keys(entry, _RPC_KEYS, where)
        entry = self.mapping(entry, where)
        name, given = entry.get("method"), entry.get("given")
        if not isinstance(name, str) or not isinstance(given, str) or not given:
            raise self.fail(where, "needs a `method` (its full name) and a `given` state")
        method = find_method(name)
        if method is None:
            raise self.fail(f"{where}.method", f"no method {name!r} in the contracts")
        if not name.startswith(f"shop.{provider}."):
            raise self.fail(f"{where}.method", f"{name!r} is not one of {provider}'s methods")
        request = self.paths(entry, "request", method.input_type, where)
        response = self.paths(entry, "response", method.output_type, where)
        may_be_empty = self.may_be_empty(entry, response, where)
        return Interaction(method, given, request, response, may_be_empty)

    def consumed_event(self, name: str, entry: object, provider: str) -> ConsumedEvent:
        where = f"events.{name}"
        self.keys(entry or {}, _EVENT_KEYS, where)
        entry = self.mapping(entry or {}, where)
        producer, _, event = str(name).partition(".")
        if producer != provider:
            raise self.fail(where, f"an event of {producer!r}, not of {provider!r}")
        if event not in _PAYLOADS:
            raise self.fail(where, f"no event {event!r} in {_ENVELOPE.full_name}")
        envelope = self.paths(entry, "envelope", _ENVELOPE, where)
        for path in envelope:
            if path.split(".")[0] in _PAYLOADS:
                raise self.fail(
                    f"{where}.envelope", f"{path!r}: a payload's field goes in `payload`"
                )
        payload = self.paths(entry, "payload", _PAYLOADS[event], where)
        may_be_empty = self.may_be_empty(entry, payload, where)
        return ConsumedEvent(producer, event, envelope, payload, may_be_empty)


def find_method(full_name: str) -> MethodDescriptor | None:
    """The method `shop.<service>.<version>.<Service>.<Method>` of the generated contracts,
    its package's modules imported first; None if there is no such method."""
    package = full_name.rsplit(".", 2)[0]
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    for info in pkgutil.iter_modules(module.__path__):
        if info.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{info.name}")
    try:
        return descriptor_pool.Default().FindMethodByName(full_name)
    except KeyError:
        return None


def field_path_problem(root: Descriptor, path: str) -> str | None:
    """Why `path` names no field reached from `root` (None: it does)."""
    message: Descriptor | None = root
    walked = root.full_name
    for name in path.split("."):
        if message is None:
            return f"{walked} is not a message, so it has no field {name!r}"
        field = message.fields_by_name.get(name)
        if field is None:
            return f"{message.full_name} has no field {name!r}"
        message = None if _is_map(field) else field.message_type
        walked = field.full_name
    return None


def _is_map(field: FieldDescriptor) -> bool:
    """Whether `field` is a map, which a path may name whole but not walk into."""
    entry = field.message_type
    return entry is not None and entry.GetOptions().map_entry


def unset_paths(
    message: Message, paths: Iterable[str], may_be_empty: Collection[str] = ()
) -> list[str]:
    """The `paths` that `message` leaves unset or empty, in order.

    Through a repeated field a path must be filled in every element, and there must be an
    element; a list or map must have an entry, a message must be present and not empty, and
    a scalar must be set: away from its zero value, or, for a field that tracks presence
    (`optional`), set at all. A path that `may_be_empty` is read with its zero value too, so
    it is never reported."""
    return [
        path for path in paths if path not in may_be_empty and not _filled(message, path.split("."))
    ]


def _filled(message: Message, names: Sequence[str]) -> bool:
    field = cast(FieldDescriptor, message.DESCRIPTOR.fields_by_name[names[0]])
    value = getattr(message, field.name)
    if len(names) == 1:
        return _leaf_filled(message, field, value)
    if field.is_repeated:
        return len(value) > 0 and all(_filled(element, names[1:]) for element in value)
    return message.HasField(field.name) and _filled(value, names[1:])


def _leaf_filled(message: Message, field: FieldDescriptor, value: Any) -> bool:
    if field.is_repeated:
        return len(value) > 0
    if field.message_type is not None:
        return message.HasField(field.name) and value.ByteSize() > 0
    if field.has_presence:
        return message.HasField(field.name)
    return bool(value != field.default_value)


def only(message: M, paths: Iterable[str]) -> M:
    """A copy of `message` with nothing set but `paths`: what a consumer that declares just
    these fields is handed. Through a repeated field every element keeps its own."""
    kept = type(message)()
    kept.CopyFrom(message)
    _prune(kept, _tree(paths))
    return kept


def given_to(
    consumed: ConsumedEvent, envelope: events_pb2.EventEnvelope
) -> events_pb2.EventEnvelope:
    """`envelope` as a consumer that declares `consumed` is handed it: the fields it reads and
    the runtime's, and its payload's field still set, however little of it is read."""
    kept = only(envelope, consumed.paths)
    getattr(kept, consumed.event).SetInParent()
    return kept


def _tree(paths: Iterable[str]) -> _Tree:
    tree: _Tree = {}
    for path in paths:
        node: _Tree | None = tree
        *parents, leaf = path.split(".")
        for name in parents:
            assert node is not None
            node = node.setdefault(name, {})
            if node is None:  # an ancestor is kept whole
                break
        else:
            assert node is not None
            node[leaf] = None
    return tree


def _prune(message: Message, tree: _Tree) -> None:
    for field, value in message.ListFields():
        if field.name not in tree:
            message.ClearField(field.name)
            continue
        subtree = tree[field.name]
        if subtree is None:
            continue
        for element in value if field.is_repeated else [value]:
            _prune(element, subtree)


def set_paths(message: Message) -> set[str]:
    """The fields `message` sets, as paths to its scalars, lists of scalars and maps
    (through a repeated message, those any element sets)."""
    paths: set[str] = set()
    for field, value in message.ListFields():
        if field.message_type is None or _is_map(field):
            paths.add(field.name)
            continue
        inner: set[str] = set()
        for element in value if field.is_repeated else [value]:
            inner |= set_paths(element)
        paths |= {f"{field.name}.{path}" for path in inner} or {field.name}
    return paths


def undeclared_paths(message: Message, declared: Iterable[str]) -> list[str]:
    """The fields `message` sets that none of the `declared` paths covers, sorted: what a
    consumer sends, or reads, without saying so."""
    prefixes = tuple(f"{path}." for path in declared)
    exact = set(declared)
    return sorted(p for p in set_paths(message) if p not in exact and not p.startswith(prefixes))


def verify_response(
    contract: Contract, interaction: Interaction, response: Message
) -> list[Breach]:
    """How the provider's `response` to `interaction` falls short of what the consumer reads."""
    unset = unset_paths(response, interaction.response, interaction.may_be_empty)
    return [Breach(contract, interaction.name, f"{path} is left unset or empty") for path in unset]


def verify_events(
    contract: Contract, published: Iterable[events_pb2.EventEnvelope]
) -> list[Breach]:
    """How the events the provider's flows `published` fall short of what the consumer
    reads: an event it handles that no flow published, or a field an event left unset."""
    by_event: dict[str, list[events_pb2.EventEnvelope]] = {}
    for envelope in published:
        if envelope.producer == contract.provider:
            by_event.setdefault(envelope.WhichOneof("payload") or "", []).append(envelope)
    breaches = []
    for consumed in contract.events:
        envelopes = by_event.get(consumed.event, [])
        name = f"event {consumed.name}"
        if not envelopes:
            problem = f"no flow of {contract.provider} publishes it"
            breaches.append(Breach(contract, name, problem))
        for path in consumed.paths:
            missing = sum(
                1 for e in envelopes if unset_paths(e, [path], consumed.may_be_empty_paths)
            )
            if missing:
                problem = (
                    f"{path} is left unset or empty in {missing} of {len(envelopes)} published"
                )
                breaches.append(Breach(contract, name, problem))
    return breaches


def topology_gaps(topology: Topology, contracts: Sequence[Contract]) -> list[str]:
    """Where the contracts and the topology disagree: a call or a consumed event of
    mesh.yaml that no contract declares, or a declared one mesh.yaml does not route (its
    consumer would never make the call, or never be handed the event)."""
    gaps = []
    for name, service in topology.services.items():
        mine = [c for c in contracts if c.consumer == name]
        declared = {e.name for c in mine for e in c.events}
        gaps += [
            f"{name} consumes {event} (mesh.yaml), but no contract of {name} declares it"
            for event in service.consumes
            if event not in declared
        ]
        for callee, grant in service.grants.items():
            methods = {i.method.name for c in mine if c.provider == callee for i in c.interactions}
            wanted = () if isinstance(grant, str) else grant
            gaps += [
                f"{name} calls {callee}.{method} (mesh.yaml), but no contract of {name} declares it"
                for method in wanted
                if method not in methods
            ]
            if not methods:
                gaps.append(f"{name} calls {callee} (mesh.yaml), but has no contract on it")
    for contract in contracts:
        gaps += _unrouted(topology, contract)
    return gaps


def _unrouted(topology: Topology, contract: Contract) -> list[str]:
    """What `contract` declares that the topology never lets its consumer do or see."""
    service = topology.services.get(contract.consumer)
    if service is None:
        return [f"{contract.source}: {contract.consumer} is not a service of mesh.yaml"]
    grant = service.grants.get(contract.provider, ())
    # A group (`all`, `public`) is a policy of the callee's sidecar, not a list to hold to.
    gaps = [
        f"{contract.source}: {contract.consumer} may not call {interaction.grpc_path} (mesh.yaml)"
        for interaction in contract.interactions
        if not isinstance(grant, str) and interaction.method.name not in grant
    ]
    gaps += [
        f"{contract.source}: {contract.consumer} does not consume {event.name} (mesh.yaml)"
        for event in contract.events
        if event.name not in service.consumes
    ]
    return gaps
