"""The mesh's topology: `mesh.yaml`, loaded once and checked before anything starts.

`mesh.yaml` is the one place that says which services exist, how many replicas each runs,
which ports are fixed, who calls whom and with which policy (timeout, retries, outlier
detection, circuit breaking), what the edge exposes and which SPIFFE trust domain the
certificates name. Envoy configuration, certificates, the local process plan and the
deploy manifests are all derived from the `Topology` built here, so a mistake in the file
must stop the mesh with a message that names the file and the line, never be carried
silently into a rendered config: an unknown key (`replica: 2`) is an error, not ignored.

Line numbers come from PyYAML's composed node tree (every node carries its start mark),
walked here by hand instead of constructed into plain dicts, which would lose them.
Anchors, aliases and `<<` merge keys work as in any YAML file.

Call policies merge deeply: every `calls:` entry starts from `defaults`, which starts from
the built-in `DEFAULT_CALL_POLICY`; an entry names only what differs.
"""

from __future__ import annotations

import dataclasses
import difflib
import heapq
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

import grpc
import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mesh.runtime.admission import Backlog, Limits
from mesh.runtime.telemetry import TelemetrySettings

#: The most replicas one service may run; more is a typo or belongs in a real cluster.
MAX_REPLICAS = 16

#: The most retries a call may make after its first try.
MAX_RETRY_ATTEMPTS = 10

#: Envoy's counters and thresholds are uint32.
_UINT32_MAX = 2**32 - 1

_MAX_PORT = 65_535

#: Identities that are not services: the edge proxy has its own SPIFFE ID, and the event
#: bus is a process of the local plan; a service by either name would be ambiguous.
RESERVED_NAMES = frozenset({"edge", "nats"})

_TAG_STR = "tag:yaml.org,2002:str"
_TAG_NULL = "tag:yaml.org,2002:null"
_TAG_MERGE = "tag:yaml.org,2002:merge"
_TAG_MAP = "tag:yaml.org,2002:map"
_TAG_SEQ = "tag:yaml.org,2002:seq"

_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

#: A DNS label: service names and the namespace become DNS names, Kubernetes object
#: names and path segments of SPIFFE IDs.
_DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NAMESPACE = re.compile(_DNS_LABEL)
_TRUST_DOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_EVENT_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


class TopologyError(ValueError):
    """`mesh.yaml` cannot be read or breaks a rule; the message starts `file:line:`."""

    def __init__(self, detail: str, source: str, line: int | None) -> None:
        location = source if line is None else f"{source}:{line}"
        super().__init__(f"{location}: {detail}")
        self.detail = detail
        self.source = source
        self.line = line


def parse_duration(text: str) -> float:
    """Seconds in `text`: a non-negative number and one unit, as in 250ms, 2s, 1.5s, 1m, 1h.

    Nothing else is accepted (no spaces, no bare numbers, no compound `1m30s`), so a
    value's unit is always visible in the file.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        if text.strip().startswith("-"):
            raise ValueError(f"duration {text!r} is negative")
        raise ValueError(f"{text!r} is not a duration (use a number and a unit: 250ms, 2s, 1m, 1h)")
    return float(match["number"]) * _UNIT_SECONDS[match["unit"]]


@dataclass(frozen=True)
class RetryPolicy:
    """Envoy's retry policy for one call, with its retry budget."""

    attempts: int
    per_try_timeout: float
    backoff_base: float
    backoff_max: float
    budget_percent: float
    min_retry_concurrency: int


@dataclass(frozen=True)
class OutlierDetection:
    """When Envoy ejects a misbehaving replica of the called service, and for how long."""

    consecutive_5xx: int
    consecutive_gateway_failure: int
    interval: float
    base_ejection_time: float
    max_ejection_percent: int


@dataclass(frozen=True)
class CircuitBreaker:
    """Envoy's limits on connections and requests from a caller to a called service."""

    max_connections: int
    max_pending_requests: int
    max_requests: int


@dataclass(frozen=True)
class CallPolicy:
    """How one service calls another: durations in seconds."""

    timeout: float
    retries: RetryPolicy
    outlier_detection: OutlierDetection
    circuit_breaker: CircuitBreaker


#: The groups of methods `calls.<service>.methods` may name instead of a list: every
#: method of the callee, or those it serves the edge (the ones not marked INTERNAL).
ALL_METHODS, PUBLIC_METHODS = "all", "public"
METHOD_GROUPS = (ALL_METHODS, PUBLIC_METHODS)
#: The methods a service may call on another: a group name, or method names.
Grant = str | tuple[str, ...]


@dataclass(frozen=True)
class FixedPorts:
    """A service's fixed base ports; None means "pick a free port".

    Envoy's admin interface has no port: it is a unix socket in the run directory
    (`mesh.control.plan.admin_socket`).
    """

    app: int | None
    inbound: int | None

    def for_replica(self, index: int) -> FixedPorts:
        """The ports of replica `index`: replica i uses each base port + i."""
        return FixedPorts(
            *(None if port is None else port + index for port in (self.app, self.inbound))
        )


@dataclass(frozen=True)
class Faults:
    """Failures a service's sidecar injects into the calls it receives (Envoy's fault
    filter), to see its callers cope. Each try is judged on its own, so a retry by the
    caller's sidecar is a new chance; a delayed call is held before it reaches the app."""

    abort_percent: float = 0.0
    abort_status: str = "UNAVAILABLE"
    """The gRPC status of an aborted call, by name."""
    delay_percent: float = 0.0
    delay: float = 0.0
    """Seconds a delayed call is held."""


#: What a method costs its service: `expensive` ones (password hashing) are admitted a
#: few at a time and never sent again after their caller's sidecar gave up on a try.
CHEAP, EXPENSIVE = "cheap", "expensive"
COSTS = (CHEAP, EXPENSIVE)
#: A service's share of a CPU it contends for: `serving` calls that clients wait on, or
#: `background` work no client waits on (the saga's steps), which gets the CPU the
#: serving work leaves (`mesh.control.supervisor`: a higher niceness; containers: fewer shares).
SERVING, BACKGROUND = "serving", "background"
PRIORITIES = (SERVING, BACKGROUND)


@dataclass(frozen=True)
class MethodPolicy:
    """What `mesh.yaml` says of one method of a service, where it differs from the rest."""

    cost: str = CHEAP
    timeout: float | None = None
    """Seconds every caller (the edge included) waits for it; None: the caller's policy."""
    line: int | None = dataclasses.field(default=None, compare=False)


@dataclass(frozen=True)
class Admission:
    """How many calls one app instance works on at once; one more is refused at once."""

    max_in_flight: int = Limits.max_in_flight
    expensive_in_flight: int = Limits.expensive_in_flight
    """Of those, calls to its `expensive` methods."""
    backlog: Backlog | None = None
    """The accepted, unfinished work of the whole service it holds at most (None: no
    bound); only a service whose work outlives its calls (orders' sagas) counts one."""


@dataclass(frozen=True)
class Service:
    """One service of the mesh: its replicas, fixed ports and the calls it makes."""

    name: str
    replicas: int
    calls: Mapping[str, CallPolicy]
    ports: FixedPorts
    consumes: tuple[str, ...] = ()
    """The events it handles, as `<producer>.<event>`; its subjects are `shop.` + each."""
    faults: Faults | None = None
    """Failures to inject into calls it receives (none unless configured)."""
    methods: Mapping[str, MethodPolicy] = dataclasses.field(default_factory=dict)
    """Its methods (by name, e.g. `Login`) whose cost or timeout differs from the rest."""
    admission: Admission = Admission()
    priority: str = SERVING
    grants: Mapping[str, Grant] = dataclasses.field(default_factory=dict)
    """The methods it may call on each service of `calls` (`methods:` there): its sidecar's
    callees admit it to those only."""

    @property
    def background(self) -> bool:
        """Whether its processes run on the CPU the serving ones leave (`priority`)."""
        return self.priority == BACKGROUND

    @property
    def expensive_methods(self) -> frozenset[str]:
        """The names of its methods of cost `expensive`."""
        return frozenset(name for name, m in self.methods.items() if m.cost == EXPENSIVE)

    def method(self, name: str) -> MethodPolicy:
        """The policy of its method `name` (the default one unless mesh.yaml names it)."""
        return self.methods.get(name, _DEFAULT_METHOD)

    @property
    def consumed_subjects(self) -> list[str]:
        return [f"shop.{event}" for event in self.consumes]


@dataclass(frozen=True)
class NatsSettings:
    """The event bus: None means "pick a free port"."""

    port: int | None


@dataclass(frozen=True)
class EdgeAuth:
    """Who may call what through the edge.

    Methods are named `<service>.<Method>` (e.g. `catalog.CreateProduct`). A `public`
    method needs no token; a method in `scopes` needs a token carrying that scope; every
    other exposed method needs a valid token. `lines` remembers where each name was
    written, so a name the contracts do not know can be reported at its line.
    """

    issuer: str = "shop-identity"
    audience: str = "shop"
    public: tuple[str, ...] = ()
    scopes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    lines: Mapping[str, int] = dataclasses.field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Bucket:
    """A token bucket: refilled at `requests_per_second`, holding `burst` at most."""

    requests_per_second: int
    burst: int


@dataclass(frozen=True)
class RateLimit:
    """The edge's token buckets; a request that finds one of its buckets empty gets 429.

    Every request takes from `total`; a request with a token also from its subject's own
    `per_client` bucket; one without from its client address's `per_client` bucket and
    from `anonymous`, which all of them share. Health checks take from none.
    """

    total: Bucket = Bucket(1000, 2000)
    per_client: Bucket = Bucket(200, 400)
    anonymous: Bucket = Bucket(400, 800)


@dataclass(frozen=True)
class EdgeSettings:
    """The edge proxy: its port (0 picks a free one), what it exposes and how it guards it."""

    port: int
    expose: tuple[str, ...]
    auth: EdgeAuth = EdgeAuth()
    rate_limit: RateLimit = RateLimit()
    max_request_bytes: int = 1_048_576
    timeout: float = 15.0
    cors_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topology:
    """The whole mesh, as `mesh.yaml` describes it, already checked."""

    trust_domain: str
    namespace: str
    services: Mapping[str, Service]
    nats: NatsSettings
    edge: EdgeSettings
    source: Path | None
    telemetry: TelemetrySettings = dataclasses.field(default_factory=TelemetrySettings)

    def start_order(self) -> list[str]:
        """Every service after the services it calls; among equals, by name."""
        waiting = {name: set(service.calls) for name, service in self.services.items()}
        ready = [name for name, callees in waiting.items() if not callees]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            name = heapq.heappop(ready)
            order.append(name)
            for caller in self.callers_of(name):
                waiting[caller].discard(name)
                if not waiting[caller]:
                    heapq.heappush(ready, caller)
        if len(order) != len(self.services):
            # Only a Topology built by hand gets here: the loader refuses cycles.
            stuck = sorted(set(self.services) - set(order))
            raise ValueError(f"calls form a cycle among: {', '.join(stuck)}")
        return order

    def callers_of(self, name: str) -> list[str]:
        """The services that call `name`, sorted."""
        self._require_service(name)
        return sorted(caller for caller, service in self.services.items() if name in service.calls)

    def spiffe_id(self, identity: str) -> str:
        """The SPIFFE ID of a service, or of the edge proxy (`identity="edge"`)."""
        if identity != "edge":
            self._require_service(identity)
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{identity}"

    def _require_service(self, name: str) -> None:
        # A typo here would otherwise render an empty RBAC rule or a certificate for nobody.
        if name not in self.services:
            raise ValueError(f"unknown service {name!r} (known: {', '.join(self.services)})")


_DEFAULT_METHOD = MethodPolicy()

DEFAULT_TRUST_DOMAIN = "shop.local"
DEFAULT_NAMESPACE = "shop"
DEFAULT_EDGE_PORT = 8080

#: The policy every call gets when neither `defaults` nor the call says otherwise.
DEFAULT_CALL_POLICY = CallPolicy(
    timeout=2.0,
    retries=RetryPolicy(
        attempts=2,
        per_try_timeout=1.0,
        backoff_base=0.025,
        backoff_max=0.25,
        budget_percent=20.0,
        min_retry_concurrency=16,
    ),
    outlier_detection=OutlierDetection(
        consecutive_5xx=5,
        consecutive_gateway_failure=2,
        interval=2.0,
        base_ejection_time=10.0,
        max_ejection_percent=50,
    ),
    circuit_breaker=CircuitBreaker(
        max_connections=1024, max_pending_requests=1024, max_requests=1024
    ),
)


def load(path: Path) -> Topology:
    """Read and check the topology file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TopologyError(f"cannot read the topology: {error}", str(path), None) from None
    return _Reader(str(path)).topology(text, path)


def parse(text: str, source: str = "mesh.yaml") -> Topology:
    """Check the topology in `text`; `source` names it in error messages."""
    return _Reader(source).topology(text, None)


_T = TypeVar("_T")

#: A mapping node's entries by key: (key node, value node), in file order.
_Entries = dict[str, tuple[Node, Node]]


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


#: The gRPC status codes a call can fail with, by name (what `faults.abort` may return).
_GRPC_ERROR_STATUSES = tuple(code.name for code in grpc.StatusCode if code != grpc.StatusCode.OK)


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _describe(value: object) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if value is None:
        return "nothing"
    return f"{kinds.get(type(value), type(value).__name__)} ({value!r})"


class _Reader:
    """Walks the composed YAML of one file, turning nodes into checked values."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._constructor = SafeConstructor()

    def error(self, at: Node | int, detail: str) -> TopologyError:
        return TopologyError(detail, self._source, at if isinstance(at, int) else _line(at))

    # -- the file ------------------------------------------------------------------------

    def topology(self, text: str, path: Path | None) -> Topology:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            problem = ": ".join(part for part in (error.context, error.problem) if part)
            raise TopologyError(
                f"invalid YAML: {problem}", self._source, None if mark is None else mark.line + 1
            ) from None
        except yaml.YAMLError as error:
            raise TopologyError(f"invalid YAML: {error}", self._source, None) from None
        if root is None or (isinstance(root, ScalarNode) and root.tag == _TAG_NULL):
            raise self.error(1, "the topology is empty: it needs at least `services:`")

        top = self.mapping(
            root,
            "the topology",
            {
                "trust_domain",
                "namespace",
                "defaults",
                "admission",
                "nats",
                "edge",
                "services",
                "telemetry",
            },
        )
        trust_domain = self.optional(top, "trust_domain", DEFAULT_TRUST_DOMAIN, self.trust_domain)
        namespace = self.optional(
            top,
            "namespace",
            DEFAULT_NAMESPACE,
            lambda node: self.name(node, "namespace", _NAMESPACE),
        )
        defaults = self.optional(
            top,
            "defaults",
            DEFAULT_CALL_POLICY,
            lambda node: self.call_policy(node, DEFAULT_CALL_POLICY, "defaults"),
        )
        if "services" not in top:
            raise self.error(root, "no services: the topology needs a `services:` mapping")
        admission = self.optional(
            top,
            "admission",
            Admission(),
            lambda node: self.admission(node, Admission(), "admission"),
        )
        services_key, services_node = top["services"]
        services = self.services(services_key, services_node, defaults, admission)
        nats = self.optional(top, "nats", NatsSettings(port=None), self.nats)
        edge = self.optional(
            top, "edge", EdgeSettings(DEFAULT_EDGE_PORT, ()), lambda node: self.edge(node, services)
        )
        self.check_ports(top, services, nats, edge)
        return Topology(
            trust_domain=trust_domain,
            namespace=namespace,
            services=MappingProxyType(services),
            nats=nats,
            edge=edge,
            source=path,
            telemetry=self.optional(top, "telemetry", TelemetrySettings(), self.telemetry),
        )

    # -- sections ------------------------------------------------------------------------

    def trust_domain(self, node: Node) -> str:
        value = self.string(node, "trust_domain")
        if len(value) > 255 or not _TRUST_DOMAIN.fullmatch(value):
            raise self.error(
                node,
                f"trust_domain {value!r} is not a valid SPIFFE trust domain "
                "(lowercase letters, digits and hyphens, in dot-separated labels, e.g. shop.local)",
            )
        return value

    def services(
        self, key: Node, node: Node, defaults: CallPolicy, admission: Admission
    ) -> dict[str, Service]:
        if self.is_null(node):
            raise self.error(key, "no services: `services:` is empty")
        entries = self.mapping(node, "services", None)
        if not entries:
            raise self.error(key, "no services: `services:` is empty")
        for name, (name_node, _) in entries.items():
            if name in RESERVED_NAMES:
                raise self.error(name_node, f"{name!r} is reserved and cannot name a service")
            self.name(name_node, "a service name", _NAME)

        call_lines: dict[tuple[str, str], int] = {}
        services: dict[str, Service] = {}
        for name, (_, service_node) in entries.items():
            services[name] = self.service(
                name, service_node, entries, (defaults, admission), call_lines
            )
        self.check_no_cycle(services, call_lines)
        return services

    def service(
        self,
        name: str,
        node: Node,
        known: Mapping[str, object],
        inherited: tuple[CallPolicy, Admission],
        call_lines: dict[tuple[str, str], int],
    ) -> Service:
        where = f"services.{name}"
        defaults, admission = inherited
        keys = {
            "replicas", "calls", "ports", "consumes", "faults", "methods", "admission", "priority"
        }  # fmt: skip
        entries = self.mapping(node, where, keys, null_is_empty=True)
        replicas = self.optional(
            entries, "replicas", 1, lambda n: self.integer(n, f"{where}.replicas", 1, MAX_REPLICAS)
        )
        calls: dict[str, CallPolicy] = {}
        grants: dict[str, Grant] = {}
        if "calls" in entries:
            calls_node = entries["calls"][1]
            if isinstance(calls_node, SequenceNode):
                raise self.error(
                    calls_node,
                    f"{where}.calls must be a mapping of service name to call policy "
                    "(write `inventory: {}` to call inventory with the defaults)",
                )
            for callee, (callee_node, policy_node) in self.mapping(
                calls_node, f"{where}.calls", None, null_is_empty=True
            ).items():
                if callee == name:
                    raise self.error(callee_node, f"{name} calls itself")
                if callee not in known:
                    raise self.error(
                        callee_node,
                        f"{name} calls unknown service {callee!r} "
                        f"(known: {', '.join(sorted(known))}){_suggest(callee, known)}",
                    )
                call_lines[(name, callee)] = _line(callee_node)
                calls[callee] = self.call_policy(
                    policy_node, defaults, f"{where}.calls.{callee}", _line(callee_node),
                    extra={"methods"},
                )  # fmt: skip
                grants[callee] = self.grant(policy_node, f"{where}.calls.{callee}", callee_node)
        ports = self.optional(
            entries, "ports", FixedPorts(None, None), lambda n: self.ports(n, where, replicas)
        )
        consumes = self.consumes(entries, name, known)
        faults = self.optional(entries, "faults", None, lambda n: self.faults(n, where))
        methods: dict[str, MethodPolicy] = self.optional(
            entries, "methods", {}, lambda n: self.methods(n, where)
        )
        admission = self.optional(
            entries,
            "admission",
            admission,
            lambda n: self.admission(n, admission, f"{where}.admission"),
        )
        priority = self.optional(
            entries, "priority", SERVING, lambda n: self.choice(n, f"{where}.priority", PRIORITIES)
        )
        return Service(
            name,
            replicas,
            MappingProxyType(calls),
            ports,
            consumes,
            faults,
            MappingProxyType(methods),
            admission,
            priority,
            MappingProxyType(grants),
        )

    def grant(self, node: Node, where: str, at: Node) -> Grant:
        """The methods a call entry lets the caller use: `methods:` is required, a group
        (`all`, `public`) or a list of method names, so no caller gets more than it names."""
        # The entry was read as a call policy already (merge keys flattened, last wins).
        found = [
            value
            for key, value in (node.value if isinstance(node, MappingNode) else ())
            if str(key.value) == "methods"
        ]
        if not found:
            raise self.error(
                at,
                f"{where} needs `methods`: the methods it calls there "
                "(e.g. `methods: [GetProduct]`), or `methods: public` or `methods: all`",
            )
        value = found[-1]
        if isinstance(value, ScalarNode):
            return self.choice(value, f"{where}.methods", METHOD_GROUPS)
        names: list[str] = []
        entries = {"methods": (value, value)}
        for item in self.sequence(entries, "methods", f"{where}.methods must be a list or a group"):
            method = self.string(item, f"a {where}.methods entry")
            if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", method):
                raise self.error(item, f"{where}.methods entry {method!r} is not a method name")
            if method in names:
                raise self.error(item, f"{where}.methods lists {method!r} twice")
            names.append(method)
        if not names:
            raise self.error(value, f"{where}.methods names no method; drop the call instead")
        return tuple(names)

    def methods(self, node: Node, where: str) -> dict[str, MethodPolicy]:
        where = f"{where}.methods"
        return {
            method: self.method_policy(key, value, f"{where}.{method}")
            for method, (key, value) in self.mapping(node, where, None).items()
        }

    def method_policy(self, key: Node, node: Node, where: str) -> MethodPolicy:
        if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", str(key.value)):
            raise self.error(key, f"{where} does not name a method like GetProduct")
        entries = self.mapping(node, where, {"cost", "timeout"})
        cost = self.optional(
            entries, "cost", CHEAP, lambda n: self.choice(n, f"{where}.cost", COSTS)
        )
        timeout = self.optional(
            entries, "timeout", None, lambda n: self.duration(n, f"{where}.timeout")
        )
        return MethodPolicy(cost, timeout, _line(key))

    def choice(self, node: Node, where: str, choices: Sequence[str]) -> str:
        value = self.string(node, where)
        if value not in choices:
            raise self.error(node, f"{where} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def admission(self, node: Node, base: Admission, where: str) -> Admission:
        entries = self.mapping(
            node, where, {"max_in_flight", "expensive_in_flight", "backlog"}, null_is_empty=True
        )
        admission = Admission(
            max_in_flight=self.optional(
                entries,
                "max_in_flight",
                base.max_in_flight,
                lambda n: self.integer(n, f"{where}.max_in_flight", 1, 100_000),
            ),
            expensive_in_flight=self.optional(
                entries,
                "expensive_in_flight",
                base.expensive_in_flight,
                lambda n: self.integer(n, f"{where}.expensive_in_flight", 1, 100_000),
            ),
            backlog=self.optional(
                entries, "backlog", base.backlog, lambda n: self.backlog(n, f"{where}.backlog")
            ),
        )
        if admission.expensive_in_flight > admission.max_in_flight:
            raise self.error(
                node,
                f"{where}: expensive_in_flight ({admission.expensive_in_flight}) is more "
                f"than max_in_flight ({admission.max_in_flight})",
            )
        return admission

    def backlog(self, node: Node, where: str) -> Backlog:
        entries = self.mapping(node, where, {"total", "per_client"})
        total = self.integer(
            self.required(entries, "total", where, node), f"{where}.total", 1, 10_000_000
        )
        per_client = self.optional(
            entries,
            "per_client",
            total,
            lambda n: self.integer(n, f"{where}.per_client", 1, 10_000_000),
        )
        if per_client > total:
            raise self.error(
                node, f"{where}: per_client ({per_client}) is more than total ({total})"
            )
        return Backlog(total, per_client)

    def faults(self, node: Node, where: str) -> Faults:
        where = f"{where}.faults"
        entries = self.mapping(node, where, {"abort", "delay"})
        faults = Faults()
        if "abort" in entries:
            abort = self.mapping(entries["abort"][1], f"{where}.abort", {"percent", "grpc_status"})
            percent = self.required(abort, "percent", f"{where}.abort", node)
            status = self.optional(
                abort,
                "grpc_status",
                faults.abort_status,
                lambda n: self.grpc_status(n, f"{where}.abort.grpc_status"),
            )
            faults = dataclasses.replace(
                faults,
                abort_percent=self.percent(percent, f"{where}.abort.percent"),
                abort_status=status,
            )
        if "delay" in entries:
            delay = self.mapping(entries["delay"][1], f"{where}.delay", {"percent", "duration"})
            percent = self.required(delay, "percent", f"{where}.delay", node)
            duration = self.required(delay, "duration", f"{where}.delay", node)
            faults = dataclasses.replace(
                faults,
                delay_percent=self.percent(percent, f"{where}.delay.percent"),
                delay=self.duration(duration, f"{where}.delay.duration"),
            )
        return faults

    def grpc_status(self, node: Node, where: str) -> str:
        name = self.string(node, where)
        if name not in _GRPC_ERROR_STATUSES:
            raise self.error(
                node,
                f"{where} must be a gRPC error status such as UNAVAILABLE, got {name!r}"
                f"{_suggest(name, _GRPC_ERROR_STATUSES)}",
            )
        return name

    def consumes(
        self, entries: _Entries, name: str, known: Mapping[str, object]
    ) -> tuple[str, ...]:
        """The events a service consumes: `<producer>.<event>`, of another known service."""
        where = f"services.{name}.consumes"
        events: list[str] = []
        for node in self.sequence(entries, "consumes", f"{where} must be a list"):
            event = self.string(node, f"a {where} entry")
            producer, _, kind = event.partition(".")
            if not _EVENT_NAME.fullmatch(kind):
                raise self.error(
                    node,
                    f"{where} entry {event!r} must be <producer>.<event>, "
                    "the event in snake case (e.g. orders.order_placed)",
                )
            if producer not in known or producer == name:
                raise self.error(
                    node,
                    f"{where} entry {event!r} names no other service "
                    f"(known: {', '.join(sorted(known))}){_suggest(producer, known)}",
                )
            if event in events:
                raise self.error(node, f"{where} lists {event!r} twice")
            events.append(event)
        return tuple(events)

    def ports(self, node: Node, where: str, replicas: int) -> FixedPorts:
        if isinstance(node, MappingNode):
            for key, _ in node.value:
                if isinstance(key, ScalarNode) and str(key.value) == "admin":
                    raise self.error(
                        key,
                        f"{where}.ports.admin: Envoy's admin interface has no port any more, "
                        "it is a unix socket in the run directory, owner only; remove the key",
                    )
        entries = self.mapping(node, f"{where}.ports", {"app", "inbound"}, null_is_empty=True)

        def base_port(kind: str) -> int | None:
            if kind not in entries:
                return None
            value_node = entries[kind][1]
            port = self.integer(value_node, f"{where}.ports.{kind}", 0, _MAX_PORT)
            # Replica i listens on base + i, so the last replica must still fit.
            if port and port + replicas - 1 > _MAX_PORT:
                raise self.error(
                    value_node,
                    f"{where}.ports.{kind}: replica {replicas - 1} would listen on "
                    f"{port + replicas - 1}, above {_MAX_PORT}",
                )
            return port or None

        return FixedPorts(base_port("app"), base_port("inbound"))

    def telemetry(self, node: Node) -> TelemetrySettings:
        keys = {"tracing", "sampling_percent", "otlp_endpoint"}
        entries = self.mapping(node, "telemetry", keys, null_is_empty=True)
        tracing = self.optional(
            entries, "tracing", True, lambda n: self.boolean(n, "telemetry.tracing")
        )
        sampling = self.optional(
            entries,
            "sampling_percent",
            100.0,
            lambda n: self.percent(n, "telemetry.sampling_percent"),
        )
        endpoint = self.optional(entries, "otlp_endpoint", "", self.otlp_endpoint)
        return TelemetrySettings(tracing, sampling, endpoint)

    def otlp_endpoint(self, node: Node) -> str:
        value = self.string(node, "telemetry.otlp_endpoint")
        host, _, port = value.rpartition(":")
        if value and not (host and port.isdigit() and 0 < int(port) <= _MAX_PORT):
            raise self.error(
                node,
                f"telemetry.otlp_endpoint {value!r} must be host:port (e.g. otel-collector:4317)",
            )
        return value

    def boolean(self, node: Node, where: str) -> bool:
        value = self.scalar(node)
        if not isinstance(value, bool):
            raise self.error(node, f"{where} must be true or false, got {self.describe(node)}")
        return value

    def nats(self, node: Node) -> NatsSettings:
        entries = self.mapping(node, "nats", {"port"}, null_is_empty=True)
        port = self.optional(
            entries, "port", 0, lambda n: self.integer(n, "nats.port", 0, _MAX_PORT)
        )
        return NatsSettings(port or None)

    def edge(self, node: Node, services: Mapping[str, Service]) -> EdgeSettings:
        keys = {"port", "expose", "auth", "rate_limit", "max_request_bytes", "timeout", "cors"}
        entries = self.mapping(node, "edge", keys, null_is_empty=True)
        port = self.optional(
            entries, "port", DEFAULT_EDGE_PORT, lambda n: self.integer(n, "edge.port", 0, _MAX_PORT)
        )
        expose: list[str] = []
        for item in self.sequence(entries, "expose", "edge.expose must be a list of service names"):
            name = self.string(item, "an edge.expose entry")
            if name not in services:
                raise self.error(
                    item,
                    f"edge.expose names unknown service {name!r} "
                    f"(known: {', '.join(sorted(services))}){_suggest(name, services)}",
                )
            if name in expose:
                raise self.error(item, f"edge.expose names {name!r} twice")
            expose.append(name)
        return EdgeSettings(
            port=port,
            expose=tuple(expose),
            auth=self.optional(entries, "auth", EdgeAuth(), lambda n: self.edge_auth(n, expose)),
            rate_limit=self.optional(entries, "rate_limit", RateLimit(), self.rate_limit),
            max_request_bytes=self.optional(
                entries,
                "max_request_bytes",
                EdgeSettings.max_request_bytes,
                lambda n: self.integer(n, "edge.max_request_bytes", 1024, 64 * 1_048_576),
            ),
            timeout=self.optional(
                entries, "timeout", EdgeSettings.timeout, lambda n: self.duration(n, "edge.timeout")
            ),
            cors_origins=self.optional(entries, "cors", (), self.cors),
        )

    def sequence(self, entries: _Entries, key: str, message: str) -> list[Node]:
        """The items of the list at `key` (none when the key is absent)."""
        if key not in entries:
            return []
        node = entries[key][1]
        if not isinstance(node, SequenceNode) or node.tag != _TAG_SEQ:
            raise self.error(node, message)
        return list(node.value)

    def method_name(self, node: Node, where: str, expose: list[str]) -> str:
        name = self.string(node, where)
        service, _, method = name.partition(".")
        if not method or not method[:1].isupper() or service not in expose:
            raise self.error(
                node,
                f"{where} {name!r} must name a method of an exposed service as "
                f"<service>.<Method> (exposed: {', '.join(sorted(expose))})",
            )
        return name

    def edge_auth(self, node: Node, expose: list[str]) -> EdgeAuth:
        keys = {"issuer", "audience", "public", "scopes"}
        entries = self.mapping(node, "edge.auth", keys, null_is_empty=True)
        lines: dict[str, int] = {}
        public: list[str] = []
        for item in self.sequence(entries, "public", "edge.auth.public must be a list of methods"):
            name = self.method_name(item, "edge.auth.public entry", expose)
            public.append(name)
            lines[name] = _line(item)
        scopes: dict[str, str] = {}
        if "scopes" in entries:
            for name, (key, value) in self.mapping(
                entries["scopes"][1], "edge.auth.scopes", None
            ).items():
                method = self.method_name(key, "edge.auth.scopes key", expose)
                if method in public:
                    raise self.error(key, f"{method} is public; it cannot also need a scope")
                scopes[method] = self.string(value, f"the scope of {name}")
                lines[method] = _line(key)
        default = EdgeAuth()
        return EdgeAuth(
            issuer=self.optional(
                entries, "issuer", default.issuer, lambda n: self.string(n, "edge.auth.issuer")
            ),
            audience=self.optional(
                entries,
                "audience",
                default.audience,
                lambda n: self.string(n, "edge.auth.audience"),
            ),
            public=tuple(public),
            scopes=MappingProxyType(scopes),
            lines=MappingProxyType(lines),
        )

    def rate_limit(self, node: Node) -> RateLimit:
        entries = self.mapping(node, "edge.rate_limit", {"total", "per_client", "anonymous"})
        default = RateLimit()

        def bucket(name: str, fallback: Bucket) -> Bucket:
            where = f"edge.rate_limit.{name}"
            return self.optional(entries, name, fallback, lambda n: self.bucket(n, where))

        return RateLimit(
            total=bucket("total", default.total),
            per_client=bucket("per_client", default.per_client),
            anonymous=bucket("anonymous", default.anonymous),
        )

    def bucket(self, node: Node, where: str) -> Bucket:
        entries = self.mapping(node, where, {"requests_per_second", "burst"})
        rate = self.integer(
            self.required(entries, "requests_per_second", where, node),
            f"{where}.requests_per_second",
            1,
            1_000_000,
        )
        burst = self.optional(
            entries,
            "burst",
            2 * rate,
            lambda n: self.integer(n, f"{where}.burst", 1, 10_000_000),
        )
        return Bucket(rate, burst)

    def cors(self, node: Node) -> tuple[str, ...]:
        entries = self.mapping(node, "edge.cors", {"allow_origins"})
        origins = []
        for item in self.sequence(
            entries, "allow_origins", "edge.cors.allow_origins must be a list"
        ):
            origin = self.string(item, "an edge.cors.allow_origins entry")
            if not re.fullmatch(r"https?://[A-Za-z0-9.\-]+(:[0-9]+)?", origin):
                raise self.error(item, f"{origin!r} is not an origin like http://localhost:3000")
            origins.append(origin)
        return tuple(origins)

    # -- call policies: each level overrides only what it names --------------------------

    def call_policy(
        self,
        node: Node,
        base: CallPolicy,
        where: str,
        line: int | None = None,
        extra: set[str] | frozenset[str] = frozenset(),
    ) -> CallPolicy:
        """A call policy; `extra` names keys of the entry read elsewhere (`grant`)."""
        entries = self.mapping(
            node,
            where,
            {"timeout", "retries", "outlier_detection", "circuit_breaker", *extra},
            null_is_empty=True,
        )
        policy = CallPolicy(
            timeout=self.optional(
                entries, "timeout", base.timeout, lambda n: self.duration(n, f"{where}.timeout")
            ),
            retries=self.optional(
                entries, "retries", base.retries, lambda n: self.retries(n, base.retries, where)
            ),
            outlier_detection=self.optional(
                entries,
                "outlier_detection",
                base.outlier_detection,
                lambda n: self.outlier_detection(n, base.outlier_detection, where),
            ),
            circuit_breaker=self.optional(
                entries,
                "circuit_breaker",
                base.circuit_breaker,
                lambda n: self.circuit_breaker(n, base.circuit_breaker, where),
            ),
        )
        retries = policy.retries
        if retries.attempts > 0 and retries.per_try_timeout > policy.timeout:
            # Checked after merging: a call that lowers only `timeout` can break this too.
            raise self.error(
                line if line is not None else node,
                f"{where}: retries.per_try_timeout ({retries.per_try_timeout:g}s) is longer than "
                f"timeout ({policy.timeout:g}s), so no retry could ever start; "
                "lower per_try_timeout or raise timeout",
            )
        return policy

    def retries(self, node: Node, base: RetryPolicy, parent: str) -> RetryPolicy:
        where = f"{parent}.retries"
        entries = self.mapping(
            node,
            where,
            {"attempts", "per_try_timeout", "backoff", "budget_percent", "min_retry_concurrency"},
            null_is_empty=True,
        )
        backoff_base, backoff_max = base.backoff_base, base.backoff_max
        if "backoff" in entries:
            backoff_node = entries["backoff"][1]
            backoff = self.mapping(
                backoff_node, f"{where}.backoff", {"base", "max"}, null_is_empty=True
            )
            backoff_base = self.optional(
                backoff, "base", backoff_base, lambda n: self.duration(n, f"{where}.backoff.base")
            )
            backoff_max = self.optional(
                backoff, "max", backoff_max, lambda n: self.duration(n, f"{where}.backoff.max")
            )
            if backoff_max < backoff_base:
                raise self.error(
                    backoff_node,
                    f"{where}.backoff.max ({backoff_max:g}s) is shorter than "
                    f"backoff.base ({backoff_base:g}s)",
                )
        return RetryPolicy(
            attempts=self.optional(
                entries,
                "attempts",
                base.attempts,
                lambda n: self.integer(n, f"{where}.attempts", 0, MAX_RETRY_ATTEMPTS),
            ),
            per_try_timeout=self.optional(
                entries,
                "per_try_timeout",
                base.per_try_timeout,
                lambda n: self.duration(n, f"{where}.per_try_timeout"),
            ),
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            budget_percent=self.optional(
                entries,
                "budget_percent",
                base.budget_percent,
                lambda n: self.percent(n, f"{where}.budget_percent"),
            ),
            min_retry_concurrency=self.optional(
                entries,
                "min_retry_concurrency",
                base.min_retry_concurrency,
                lambda n: self.integer(n, f"{where}.min_retry_concurrency", 0, _UINT32_MAX),
            ),
        )

    def outlier_detection(
        self, node: Node, base: OutlierDetection, parent: str
    ) -> OutlierDetection:
        where = f"{parent}.outlier_detection"
        names = {f.name for f in dataclasses.fields(OutlierDetection)}
        entries = self.mapping(node, where, names, null_is_empty=True)

        def count(key: str, default: int) -> int:
            return self.optional(
                entries, key, default, lambda n: self.integer(n, f"{where}.{key}", 1, _UINT32_MAX)
            )

        return OutlierDetection(
            consecutive_5xx=count("consecutive_5xx", base.consecutive_5xx),
            consecutive_gateway_failure=count(
                "consecutive_gateway_failure", base.consecutive_gateway_failure
            ),
            interval=self.optional(
                entries, "interval", base.interval, lambda n: self.duration(n, f"{where}.interval")
            ),
            base_ejection_time=self.optional(
                entries,
                "base_ejection_time",
                base.base_ejection_time,
                lambda n: self.duration(n, f"{where}.base_ejection_time"),
            ),
            max_ejection_percent=self.optional(
                entries,
                "max_ejection_percent",
                base.max_ejection_percent,
                lambda n: self.integer(n, f"{where}.max_ejection_percent", 0, 100),
            ),
        )

    def circuit_breaker(self, node: Node, base: CircuitBreaker, parent: str) -> CircuitBreaker:
        where = f"{parent}.circuit_breaker"
        names = {f.name for f in dataclasses.fields(CircuitBreaker)}
        entries = self.mapping(node, where, names, null_is_empty=True)

        def limit(key: str, default: int) -> int:
            return self.optional(
                entries, key, default, lambda n: self.integer(n, f"{where}.{key}", 1, _UINT32_MAX)
            )

        return CircuitBreaker(
            max_connections=limit("max_connections", base.max_connections),
            max_pending_requests=limit("max_pending_requests", base.max_pending_requests),
            max_requests=limit("max_requests", base.max_requests),
        )

    # -- rules across the whole file -----------------------------------------------------

    def check_no_cycle(
        self, services: Mapping[str, Service], call_lines: Mapping[tuple[str, str], int]
    ) -> None:
        """Refuse calls that loop: a cycle has no start order (callees start first)."""
        done: set[str] = set()

        def visit(name: str, path: list[str]) -> None:
            for callee in sorted(services[name].calls):
                if callee in path:
                    cycle = [*path[path.index(callee) :], callee]
                    raise self.error(
                        call_lines[(name, callee)],
                        f"calls form a cycle: {' -> '.join(cycle)}; "
                        "services in a cycle have no start order",
                    )
                if callee not in done:
                    visit(callee, [*path, callee])
            done.add(name)

        for name in sorted(services):
            if name not in done:
                visit(name, [name])

    def check_ports(
        self,
        top: _Entries,
        services: Mapping[str, Service],
        nats: NatsSettings,
        edge: EdgeSettings,
    ) -> None:
        """Refuse two listeners on one fixed port; the second one would fail to bind."""
        owners: dict[int, str] = {}

        def claim(port: int | None, owner: str, line: int) -> None:
            if port is None:
                return
            if port in owners:
                raise self.error(
                    line, f"{owner} port {port} collides with the {owners[port]} port {port}"
                )
            owners[port] = owner

        if edge.port:
            claim(edge.port, "edge", self.line_of(top, "edge", "port"))
        claim(nats.port, "nats", self.line_of(top, "nats", "port"))
        for name, service in services.items():
            for index in range(service.replicas):
                replica = service.ports.for_replica(index)
                for kind in ("app", "inbound"):
                    claim(
                        getattr(replica, kind),
                        f"{name} replica {index} {kind}",
                        self.line_of(top, "services", name, "ports", kind),
                    )

    def line_of(self, entries: _Entries, *keys: str) -> int:
        """The line of the value at `keys` (already checked), or of its nearest parent."""
        if keys[0] not in entries:
            return 1
        node = entries[keys[0]][1]
        line = _line(node)
        for key in keys[1:]:
            if not isinstance(node, MappingNode):
                break
            found = {str(k.value): v for k, v in node.value}.get(key)
            if found is None:
                break
            node = found
            line = _line(node)
        return line

    # -- nodes ---------------------------------------------------------------------------

    def is_null(self, node: Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == _TAG_NULL

    def mapping(
        self,
        node: Node,
        where: str,
        allowed: set[str] | None,
        *,
        null_is_empty: bool = False,
    ) -> _Entries:
        """The entries of a mapping node; unknown and repeated keys are errors."""
        if null_is_empty and self.is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            raise self.error(node, f"{where} must be a mapping, got {self.describe(node)}")
        if node.tag != _TAG_MAP:
            raise self.error(node, f"{where} has an unsupported tag {node.tag!r}")
        explicit: _Entries = {}
        for key, value in node.value:
            if key.tag == _TAG_MERGE:
                continue
            if not isinstance(key, ScalarNode):
                raise self.error(key, f"{where} has a key that is not a name")
            # The raw text, not the resolved value: a service called `on` stays a name.
            name = str(key.value)
            if name in explicit:
                raise self.error(key, f"{where} has {name!r} twice")
            if allowed is not None and name not in allowed:
                raise self.error(
                    key,
                    f"unknown key {name!r} in {where} "
                    f"(allowed: {', '.join(sorted(allowed))}){_suggest(name, allowed)}",
                )
            explicit[name] = (key, value)
        if len(explicit) == len(node.value):
            return explicit
        try:
            self._constructor.flatten_mapping(node)  # `<<: *anchor` merge keys
        except yaml.MarkedYAMLError as error:
            raise self.error(node, f"{where}: {error.problem}") from None
        merged: _Entries = {}
        for key, value in node.value:
            name = str(key.value)
            if allowed is not None and name not in allowed:
                raise self.error(key, f"unknown key {name!r} in {where} (merged in from an anchor)")
            merged[name] = (key, value)  # later entries win, so explicit keys override merged ones
        return merged

    def optional(
        self, entries: _Entries, key: str, default: _T, convert: Callable[[Node], _T]
    ) -> _T:
        return convert(entries[key][1]) if key in entries else default

    def required(self, entries: _Entries, key: str, where: str, at: Node) -> Node:
        if key not in entries:
            raise self.error(at, f"{where} needs `{key}`")
        return entries[key][1]

    def scalar(self, node: Node) -> object:
        if not isinstance(node, ScalarNode):
            return None
        try:
            return self._constructor.construct_object(node)
        except yaml.MarkedYAMLError as error:
            raise self.error(node, f"invalid value: {error.problem}") from None

    def describe(self, node: Node) -> str:
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        return _describe(self.scalar(node))

    def string(self, node: Node, what: str) -> str:
        if not isinstance(node, ScalarNode) or node.tag != _TAG_STR:
            raise self.error(node, f"{what} must be a string, got {self.describe(node)}")
        return str(node.value)

    def name(self, node: Node, what: str, pattern: re.Pattern[str]) -> str:
        value = self.string(node, what)
        if not pattern.fullmatch(value):
            raise self.error(
                node,
                f"{what} {value!r} is not a valid name (lowercase letters, digits and hyphens, "
                "at most 63, starting with a letter)",
            )
        return value

    def integer(self, node: Node, where: str, low: int, high: int) -> int:
        value = self.scalar(node)
        # bool is an int in Python; `replicas: yes` is still a mistake.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(node, f"{where} must be an integer, got {self.describe(node)}")
        if not low <= value <= high:
            raise self.error(node, f"{where} must be between {low} and {high}, got {value}")
        return value

    def percent(self, node: Node, where: str) -> float:
        value = self.scalar(node)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.error(node, f"{where} must be a number, got {self.describe(node)}")
        if not 0 <= value <= 100:
            raise self.error(node, f"{where} must be between 0 and 100, got {value:g}")
        return float(value)

    def duration(self, node: Node, where: str) -> float:
        if not isinstance(node, ScalarNode) or node.tag != _TAG_STR:
            raise self.error(
                node,
                f"{where} must be a duration with a unit such as 2s or 250ms, "
                f"got {self.describe(node)}",
            )
        try:
            seconds = parse_duration(str(node.value))
        except ValueError as error:
            raise self.error(node, f"{where}: {error}") from None
        if seconds <= 0:
            raise self.error(node, f"{where} must be longer than zero")
        return seconds
