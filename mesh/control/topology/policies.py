"""The policies of `mesh.yaml` that merge deeply: calls, methods, admission and faults.

Every `calls:` entry starts from `defaults`, which starts from the built-in
`DEFAULT_CALL_POLICY`; a service's `admission` starts from the file's. Each level names
only what differs from the one below.
"""

from __future__ import annotations

import dataclasses
import re

import grpc
from yaml.nodes import Node

from mesh.control.topology.model import (
    CHEAP,
    COSTS,
    MAX_RETRY_ATTEMPTS,
    Admission,
    CallPolicy,
    CircuitBreaker,
    Faults,
    MethodPolicy,
    OutlierDetection,
    RetryPolicy,
)
from mesh.control.topology.nodes import NodeReader, node_line, suggest
from mesh.runtime.admission import Backlog

#: Envoy's counters and thresholds are uint32.
_UINT32_MAX = 2**32 - 1

#: The gRPC status codes a call can fail with, by name (what `faults.abort` may return).
_GRPC_ERROR_STATUSES = tuple(code.name for code in grpc.StatusCode if code != grpc.StatusCode.OK)


class PolicyReader(NodeReader):
    """Reads the policies of calls and of a service's own methods, each over its base."""

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
        backoff_base, backoff_max = self.optional(
            entries,
            "backoff",
            (base.backoff_base, base.backoff_max),
            lambda n: self.backoff(n, base, f"{where}.backoff"),
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

    def backoff(self, node: Node, base: RetryPolicy, where: str) -> tuple[float, float]:
        """The base and the longest interval between retries (`retries.backoff`)."""
        entries = self.mapping(node, where, {"base", "max"}, null_is_empty=True)
        backoff_base = self.optional(
            entries, "base", base.backoff_base, lambda n: self.duration(n, f"{where}.base")
        )
        backoff_max = self.optional(
            entries, "max", base.backoff_max, lambda n: self.duration(n, f"{where}.max")
        )
        if backoff_max < backoff_base:
            raise self.error(
                node,
                f"{where}.max ({backoff_max:g}s) is shorter than backoff.base ({backoff_base:g}s)",
            )
        return backoff_base, backoff_max

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

    # -- a service's own methods, admission and faults ---------------------------------

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
        return MethodPolicy(cost, timeout, node_line(key))

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
                f"{suggest(name, _GRPC_ERROR_STATUSES)}",
            )
        return name
