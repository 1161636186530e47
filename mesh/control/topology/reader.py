"""The sections of `mesh.yaml` and the rules across them, read into a `Topology`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mesh.control.topology.api_keys import ApiKeysReader
from mesh.control.topology.autoscale import AutoscaleReader
from mesh.control.topology.cache import CacheReader
from mesh.control.topology.https import HttpsReader
from mesh.control.topology.model import (
    DEFAULT_CALL_POLICY,
    DEFAULT_EDGE_PORT,
    DEFAULT_NAMESPACE,
    DEFAULT_TRUST_DOMAIN,
    HTTP_OFF,
    HTTP_ON,
    MAX_REPLICAS,
    METHOD_GROUPS,
    PRIORITIES,
    RESERVED_NAMES,
    SERVING,
    Admission,
    AlertSettings,
    ApiKeys,
    Bucket,
    CallPolicy,
    EdgeAuth,
    EdgeSettings,
    FixedPorts,
    Grant,
    MethodPolicy,
    NatsSettings,
    Objectives,
    RateLimit,
    Service,
    Topology,
    Version,
)
from mesh.control.topology.nodes import MAX_PORT as _MAX_PORT
from mesh.control.topology.nodes import Entries, node_line, suggest
from mesh.control.topology.slo import SloReader
from mesh.control.topology.versions import VersionReader
from mesh.runtime.telemetry import TelemetrySettings

#: A DNS label: service names and the namespace become DNS names, Kubernetes object
#: names and path segments of SPIFFE IDs.
_DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NAMESPACE = re.compile(_DNS_LABEL)
_TRUST_DOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_EVENT_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")

_SECTIONS = {
    "trust_domain", "namespace", "defaults", "admission", "nats", "edge", "services", "telemetry",
    "slo", "alerts",
}  # fmt: skip
_SERVICE_KEYS = {
    "replicas", "calls", "ports", "consumes", "faults", "methods", "admission", "priority",
    "versions", "slo", "autoscale",
}  # fmt: skip


class TopologyReader(
    VersionReader, HttpsReader, ApiKeysReader, CacheReader, SloReader, AutoscaleReader
):
    """Reads one file's sections in order and checks the rules that span them."""

    # -- the file ------------------------------------------------------------------------

    def topology(self, text: str, path: Path | None) -> Topology:
        root = self.compose(text)
        if root is None:
            raise self.error(1, "the topology is empty: it needs at least `services:`")
        top = self.mapping(root, "the topology", _SECTIONS)
        trust_domain = self.optional(top, "trust_domain", DEFAULT_TRUST_DOMAIN, self.trust_domain)
        namespace = self.optional(top, "namespace", DEFAULT_NAMESPACE, self.namespace)
        services = self.services(root, top, self.optional(top, "slo", Objectives(), self.slo))
        nats = self.optional(top, "nats", NatsSettings(port=None), self.nats)
        edge = self.optional(
            top, "edge", EdgeSettings(DEFAULT_EDGE_PORT, ()), lambda node: self.edge(node, services)
        )
        port_lines = self.check_ports(top, services, nats, edge)
        return Topology(
            trust_domain=trust_domain,
            namespace=namespace,
            services=MappingProxyType(services),
            nats=nats,
            edge=edge,
            source=path,
            telemetry=self.optional(top, "telemetry", TelemetrySettings(), self.telemetry),
            alerts=self.optional(top, "alerts", AlertSettings(), self.alerts),
            port_lines=MappingProxyType(port_lines),
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

    def namespace(self, node: Node) -> str:
        return self.name(node, "namespace", _NAMESPACE)

    def services(self, root: Node, top: Entries, objectives: Objectives) -> dict[str, Service]:
        """The services, their calls over `defaults`, their admission over the file's and
        their objectives over `objectives`."""
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
        key, node = top["services"]
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
                name, service_node, entries, (defaults, admission, objectives), call_lines
            )
        self.check_no_cycle(services, call_lines)
        return services

    def service(
        self,
        name: str,
        node: Node,
        known: Mapping[str, object],
        inherited: tuple[CallPolicy, Admission, Objectives],
        call_lines: dict[tuple[str, str], int],
    ) -> Service:
        where = f"services.{name}"
        defaults, admission, objectives = inherited
        entries = self.mapping(node, where, _SERVICE_KEYS, null_is_empty=True)
        replicas = self.optional(
            entries, "replicas", 1, lambda n: self.integer(n, f"{where}.replicas", 1, MAX_REPLICAS)
        )
        lines: dict[str, int] = {}
        calls, grants = self.calls(name, entries, known, defaults, call_lines, lines)
        ports = self.optional(
            entries, "ports", FixedPorts(None, None), lambda n: self.ports(n, where, replicas)
        )
        consumes = self.consumes(entries, name, known, lines)
        faults = self.optional(entries, "faults", None, lambda n: self.faults(n, where))
        versions: tuple[Version, ...] = self.optional(
            entries, "versions", (), lambda n: self.versions(n, where, replicas, faults)
        )
        if versions and "ports" in entries:
            raise self.error(
                entries["ports"][0],
                f"{where}: a service with `versions:` cannot fix its ports (each version's "
                "replicas pick free ones)",
            )
        methods: dict[str, MethodPolicy] = self.optional(
            entries, "methods", {}, lambda n: self.methods(n, where)
        )
        admission, priority, slo = self.serving(entries, where, admission, objectives)
        autoscale = None
        if "autoscale" in entries:
            autoscale = self.autoscale(entries, where, consumes)
            replicas = autoscale.min
        return Service(
            name,
            sum(v.replicas for v in versions) if versions else replicas,
            MappingProxyType(calls),
            ports,
            consumes,
            faults,
            MappingProxyType(methods),
            admission,
            priority,
            MappingProxyType(grants),
            MappingProxyType(lines),
            versions,
            slo,
            autoscale,
        )

    def serving(
        self, entries: Entries, where: str, admission: Admission, objectives: Objectives
    ) -> tuple[Admission, str, Objectives]:
        """How a service serves: its admission over the file's, its priority, and its
        objectives over the file's."""
        admission = self.optional(
            entries,
            "admission",
            admission,
            lambda n: self.admission(n, admission, f"{where}.admission"),
        )
        priority = self.optional(
            entries, "priority", SERVING, lambda n: self.choice(n, f"{where}.priority", PRIORITIES)
        )
        slo = self.optional(
            entries, "slo", objectives, lambda n: self.service_slo(n, objectives, where)
        )
        return admission, priority, slo

    def calls(
        self,
        name: str,
        entries: Entries,
        known: Mapping[str, object],
        defaults: CallPolicy,
        call_lines: dict[tuple[str, str], int],
        method_lines: dict[str, int],
    ) -> tuple[dict[str, CallPolicy], dict[str, Grant]]:
        """The services `name` calls: the policy of each call and the methods it may use;
        the line of each call goes to `call_lines`, of each method named to `method_lines`
        (`Service.lines`)."""
        where = f"services.{name}.calls"
        calls: dict[str, CallPolicy] = {}
        grants: dict[str, Grant] = {}
        if "calls" not in entries:
            return calls, grants
        calls_node = entries["calls"][1]
        if isinstance(calls_node, SequenceNode):
            raise self.error(
                calls_node,
                f"{where} must be a mapping of service name to call policy "
                "(write `inventory: {}` to call inventory with the defaults)",
            )
        for callee, (callee_node, policy_node) in self.mapping(
            calls_node, where, None, null_is_empty=True
        ).items():
            if callee == name:
                raise self.error(callee_node, f"{name} calls itself")
            if callee not in known:
                raise self.error(
                    callee_node,
                    f"{name} calls unknown service {callee!r} "
                    f"(known: {', '.join(sorted(known))}){suggest(callee, known)}",
                )
            call_lines[(name, callee)] = node_line(callee_node)
            calls[callee] = self.call_policy(
                policy_node, defaults, f"{where}.{callee}", node_line(callee_node),
                extra={"methods"},
            )  # fmt: skip
            granted: dict[str, int] = {}
            grants[callee] = self.grant(policy_node, f"{where}.{callee}", callee_node, granted)
            method_lines.update({f"{callee}.{m}": line for m, line in granted.items()})
        return calls, grants

    def grant(self, node: Node, where: str, at: Node, lines: dict[str, int]) -> Grant:
        """The methods a call entry lets the caller use: `methods:` is required, a group
        (`all`, `public`) or a list of method names, so no caller gets more than it names;
        `lines` gets the line of each name."""
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
            lines[method] = node_line(item)
        if not names:
            raise self.error(value, f"{where}.methods names no method; drop the call instead")
        return tuple(names)

    def consumes(
        self, entries: Entries, name: str, known: Mapping[str, object], lines: dict[str, int]
    ) -> tuple[str, ...]:
        """The events a service consumes: `<producer>.<event>`, of another known service;
        `lines` gets the line of each."""
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
                    f"(known: {', '.join(sorted(known))}){suggest(producer, known)}",
                )
            if event in events:
                raise self.error(node, f"{where} lists {event!r} twice")
            events.append(event)
            lines[event] = node_line(node)
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

    def nats(self, node: Node) -> NatsSettings:
        entries = self.mapping(node, "nats", {"port"}, null_is_empty=True)
        port = self.optional(
            entries, "port", 0, lambda n: self.integer(n, "nats.port", 0, _MAX_PORT)
        )
        return NatsSettings(port or None)

    def edge(self, node: Node, services: Mapping[str, Service]) -> EdgeSettings:
        keys = {
            "port", "expose", "auth", "rate_limit", "max_request_bytes", "timeout", "cors",
            "http", "https", "api_keys", "cache",
        }  # fmt: skip
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
                    f"(known: {', '.join(sorted(services))}){suggest(name, services)}",
                )
            if name in expose:
                raise self.error(item, f"edge.expose names {name!r} twice")
            expose.append(name)
        cache, cache_lines = self.edge_cache(entries)
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
            http=self.plain_http(entries),
            https=self.optional(entries, "https", None, self.edge_https),
            api_keys=self.optional(entries, "api_keys", ApiKeys(), self.api_keys),
            cache=cache,
            cache_lines=cache_lines,
        )

    def plain_http(self, entries: Entries) -> str:
        """`edge.http`: off or redirect only with HTTPS to go to."""
        mode = self.optional(entries, "http", HTTP_ON, self.http_mode)
        if mode != HTTP_ON and "https" not in entries:
            raise self.error(
                entries["http"][1],
                f"edge.http: {mode} leaves clients no way in without edge.https "
                "(e.g. `https: {port: 8443}`)",
            )
        return mode

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
            lines[name] = node_line(item)
        scopes: dict[str, str] = {}
        if "scopes" in entries:
            for name, (key, value) in self.mapping(
                entries["scopes"][1], "edge.auth.scopes", None
            ).items():
                method = self.method_name(key, "edge.auth.scopes key", expose)
                if method in public:
                    raise self.error(key, f"{method} is public; it cannot also need a scope")
                scopes[method] = self.string(value, f"the scope of {name}")
                lines[method] = node_line(key)
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
        top: Entries,
        services: Mapping[str, Service],
        nats: NatsSettings,
        edge: EdgeSettings,
    ) -> dict[int, int]:
        """Refuse two listeners on one fixed port; the second one would fail to bind.
        The line of each fixed port, by port (`Topology.port_lines`)."""
        owners: dict[int, str] = {}
        lines: dict[int, int] = {}

        def claim(port: int | None, owner: str, line: int) -> None:
            if port is None:
                return
            if port in owners:
                raise self.error(
                    line, f"{owner} port {port} collides with the {owners[port]} port {port}"
                )
            owners[port] = owner
            lines[port] = line

        if edge.port and edge.http != HTTP_OFF:
            claim(edge.port, "edge", self.line_of(top, "edge", "port"))
        if edge.https is not None and edge.https.port:
            claim(edge.https.port, "edge.https", self.line_of(top, "edge", "https", "port"))
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
        return lines
