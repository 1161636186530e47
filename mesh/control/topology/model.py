"""The mesh's topology as data: what `mesh.yaml` says, checked and frozen.

Every part of the mesh (Envoy configuration, certificates, the local process plan, the
deploy manifests) reads a `Topology`; `mesh.control.topology.load` builds one from the file.
Durations are in seconds.
"""

from __future__ import annotations

import dataclasses
import heapq
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mesh.runtime.admission import Backlog, Limits
from mesh.runtime.telemetry import TelemetrySettings

#: The most replicas one service may run; more is a typo or belongs in a real cluster.
MAX_REPLICAS = 16

#: The most retries a call may make after its first try.
MAX_RETRY_ATTEMPTS = 10

#: Identities that are not services: the edge proxy has its own SPIFFE ID, and the event
#: bus is a process of the local plan; a service by either name would be ambiguous.
RESERVED_NAMES = frozenset({"edge", "nats"})

_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


class TopologyError(ValueError):
    """`mesh.yaml` cannot be read or breaks a rule; the message starts `file:line:`."""

    def __init__(self, detail: str, source: str, line: int | None) -> None:
        location = source if line is None else f"{source}:{line}"
        super().__init__(f"{location}: {detail}")
        self.detail = detail
        self.source = source
        self.line = line


def parse_duration(text: str) -> float:
    """Seconds in `text`: a non-negative number and one unit, as in 250ms, 2s, 1.5s, 1m, 1h,
    30d.

    Nothing else is accepted (no spaces, no bare numbers, no compound `1m30s`), so a
    value's unit is always visible in the file.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        if text.strip().startswith("-"):
            raise ValueError(f"duration {text!r} is negative")
        raise ValueError(
            f"{text!r} is not a duration (use a number and a unit: 250ms, 2s, 1m, 1h, 1d)"
        )
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


#: The share of a service's calls (in percent) all its versions' weights add up to.
TOTAL_WEIGHT = 100


@dataclass(frozen=True)
class Version:
    """One release of a service, running beside its others (`versions:` in mesh.yaml):
    its replicas and settings, and the share of the service's calls (percent) it gets
    until a rollout or `meshctl rollout weights` changes it. Every version has the
    service's identity (SPIFFE id), calls and policies; callers and the edge reach each
    one as an Envoy cluster of its own.

    A service without `versions:` runs one release named "" (`Service.releases`), whose
    instances and cluster are named after the service alone."""

    name: str
    replicas: int
    weight: int = TOTAL_WEIGHT
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Environment variables of its apps, over the mesh's own."""
    module: str | None = None
    """The Python module its apps run (`python -m`); None: `services.<service>`."""
    faults: Faults | None = None
    """Failures its sidecars inject into the calls they receive (the service's unless set)."""


#: What an autoscaled service's replicas follow (`Autoscale.metric`).
CPU, IN_FLIGHT, CONSUMER_LAG = "cpu", "in_flight", "consumer_lag"
AUTOSCALE_METRICS = (CPU, IN_FLIGHT, CONSUMER_LAG)


@dataclass(frozen=True)
class Autoscale:
    """A service whose replicas follow its load: between `min` and `max`, as many as keep
    `metric` per replica at `target` (`mesh.control.autoscaler`)."""

    min: int
    max: int
    metric: str
    """`cpu` (percent of one core per app), `in_flight` (calls each app works on) or
    `consumer_lag` (events waiting for the service's consumers, per replica)."""
    target: float
    cooldown: float = 60.0
    """Seconds the load must have wanted fewer replicas before one is removed."""


#: Seconds in a day.
DAY_SECONDS = 86_400.0


@dataclass(frozen=True)
class Objectives:
    """A service's service level objectives, each a percent of its calls over `period`."""

    availability: float = 99.9
    """Percent of calls answered without a server error."""
    latency_threshold: float = 0.25
    """Seconds within which `latency` percent of the calls are answered."""
    latency: float = 99.0
    period: float = 30 * DAY_SECONDS
    """The rolling window the objectives are kept over, in seconds."""

    @property
    def error_budget(self) -> float:
        """The share of calls that may fail (0.001 for 99.9%)."""
        return 1 - self.availability / 100

    @property
    def latency_budget(self) -> float:
        """The share of calls that may take longer than the threshold."""
        return 1 - self.latency / 100


@dataclass(frozen=True)
class AlertSettings:
    """Where firing and resolved alerts are sent (Alertmanager's webhook JSON); None:
    nowhere, `meshctl alerts` and `meshctl status` show them."""

    webhook: str | None = None


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
    lines: Mapping[str, int] = dataclasses.field(default_factory=dict, compare=False)
    """Where each name of the contracts it uses was written: a method of a `methods:` list
    in `calls` as `<callee>.<Method>`, an event of `consumes` as `<producer>.<event>`, so
    a name the contracts do not know can be reported at its line."""
    versions: tuple[Version, ...] = ()
    """Its releases running side by side, in the file's order; () when it runs one
    (`releases`). `replicas` is then the sum of theirs."""
    slo: Objectives = Objectives()
    """Its service level objectives (`mesh.control.topology.slo`)."""
    autoscale: Autoscale | None = None
    """How its replicas follow its load; None: `replicas` run, always. With it, `replicas`
    is `autoscale.min`, the replicas it starts with."""

    @property
    def releases(self) -> tuple[Version, ...]:
        """What runs of it: its versions, or its one release, named ""."""
        return self.versions or (Version("", self.replicas, faults=self.faults),)

    def release(self, name: str) -> Version:
        """Its release called `name` (KeyError if it has none by that name)."""
        for version in self.releases:
            if version.name == name:
                return version
        raise KeyError(name)

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
        """What its consumer filters on (`mesh.runtime.events.subject`)."""
        # Imported here: it reads the generated events, which meshctl must do without
        # until `meshctl proto gen` has run.
        from mesh.runtime.events import subject

        return [subject(*event.split(".", 1)) for event in self.consumes]

    @property
    def rebuilt_subjects(self) -> list[str]:
        """Those of its events that are kept per entity (`shop.catalog.product_updated.*`):
        a read model of them can be rebuilt from `SHOP_ENTITIES`; none for a saga step."""
        return [filtered for filtered in self.consumed_subjects if filtered.endswith(".*")]


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


#: What the edge's plain HTTP port does (`edge.http`) beside HTTPS: serve clients as HTTPS
#: does, listen not at all, or send every client to HTTPS.
HTTP_ON, HTTP_OFF, HTTP_REDIRECT = "on", "off", "redirect"
HTTP_MODES = (HTTP_ON, HTTP_OFF, HTTP_REDIRECT)
DEFAULT_HTTPS_PORT = 8443


@dataclass(frozen=True)
class EdgeHttps:
    """HTTPS at the edge (`edge.https`): its port (0 picks a free one) and its certificate,
    the mesh CA's (naming `hosts` beside localhost and 127.0.0.1) unless `cert_file` and
    `key_file` name the user's own, as written in mesh.yaml (relative to its directory)."""

    port: int = DEFAULT_HTTPS_PORT
    hosts: tuple[str, ...] = ()
    cert_file: str | None = None
    key_file: str | None = None
    lines: Mapping[str, int] = dataclasses.field(default_factory=dict, compare=False)
    """Where `cert_file` and `key_file` were written, so a file found unusable can be
    reported at its line."""

    def own_files(self, source: Path | None) -> tuple[Path, Path] | None:
        """The user's certificate and key, relative to the directory of mesh.yaml at
        `source` (else to the working directory); None: the mesh CA issues one."""
        if self.cert_file is None or self.key_file is None:
            return None
        base = Path.cwd() if source is None else source.parent
        return base / self.cert_file, base / self.key_file


#: The audience of API keys (`services.identity.api_key_tokens`), which no access token has.
API_KEY_AUDIENCE = "shop-api-keys"


@dataclass(frozen=True)
class Plan:
    """An API key's quota (`edge.api_keys.plans.<name>`): requests per second, with bursts
    of `burst`, and per day, a day's allowance refilled as the day goes (a token every
    86,400 / `requests_per_day` seconds), not all at once at midnight."""

    requests_per_second: int
    burst: int
    requests_per_day: int

    @property
    def seconds_per_day_token(self) -> int:
        """How long, once the day's allowance is spent, until one more request is allowed."""
        return -(-86_400 // self.requests_per_day)


@dataclass(frozen=True)
class ApiKeys:
    """API keys at the edge (`edge.api_keys`): the quota plans a key may name; a key
    naming any other plan is refused. No plans: the edge takes no keys."""

    plans: Mapping[str, Plan] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class EdgeSettings:
    """The edge proxy: its port (0 picks a free one), what it exposes and how it guards it;
    HTTPS on a port of its own (`https`, None: none), and what the plain port does then
    (`http`)."""

    port: int
    expose: tuple[str, ...]
    auth: EdgeAuth = EdgeAuth()
    rate_limit: RateLimit = RateLimit()
    max_request_bytes: int = 1_048_576
    timeout: float = 15.0
    cors_origins: tuple[str, ...] = ()
    http: str = HTTP_ON
    https: EdgeHttps | None = None
    api_keys: ApiKeys = ApiKeys()
    cache: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """How long the edge may keep a public read's answer (`edge.cache`), in whole seconds,
    by method name (`catalog.GetProduct`)."""
    cache_lines: Mapping[str, int] = dataclasses.field(default_factory=dict, compare=False)
    """The line of each `edge.cache` entry, by method name."""


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
    alerts: AlertSettings = AlertSettings()
    port_lines: Mapping[int, int] = dataclasses.field(default_factory=dict, compare=False)
    """The line of each port the file fixes (`edge.port`, `edge.https.port`, `nats.port`,
    a service's `ports:`), by port, so a port found taken can be traced to where it was set."""

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
