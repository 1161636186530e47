"""The edge's `api_keys:`: the quota plans an API key may name.

    edge:
      api_keys:
        plans:
          free: {requests_per_second: 5, requests_per_day: 10000}
          partner: {requests_per_second: 100, burst: 200, requests_per_day: 1000000}

A plan's name is what identity writes into the keys it issues (`meshctl keys create
--plan free`); `burst` defaults to twice the rate, as the edge's other buckets do.
"""

from __future__ import annotations

import re
from types import MappingProxyType

from yaml.nodes import Node

from mesh.control.topology.model import ApiKeys, Plan
from mesh.control.topology.nodes import NodeReader

#: A plan's name, as identity accepts it in a key (`services.identity.api_keys`).
PLAN_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_MAX_RATE = 1_000_000


class ApiKeysReader(NodeReader):
    """Reads `edge.api_keys`."""

    def api_keys(self, node: Node) -> ApiKeys:
        entries = self.mapping(node, "edge.api_keys", {"plans"}, null_is_empty=True)
        plans: dict[str, Plan] = {}
        if "plans" in entries:
            for name, (key, value) in self.mapping(
                entries["plans"][1], "edge.api_keys.plans", None
            ).items():
                if not PLAN_NAME.fullmatch(name):
                    raise self.error(
                        key,
                        f"edge.api_keys.plans: {name!r} is not a plan name (a lowercase letter, "
                        "then up to 31 lowercase letters, digits, '_' or '-')",
                    )
                plans[name] = self.plan(value, f"edge.api_keys.plans.{name}")
        return ApiKeys(MappingProxyType(plans))

    def plan(self, node: Node, where: str) -> Plan:
        keys = {"requests_per_second", "burst", "requests_per_day"}
        entries = self.mapping(node, where, keys)

        def rate(key: str, high: int) -> int:
            value = self.required(entries, key, where, node)
            return self.integer(value, f"{where}.{key}", 1, high)

        per_second = rate("requests_per_second", _MAX_RATE)
        per_day = rate("requests_per_day", _MAX_RATE * 86_400)
        burst = self.optional(
            entries,
            "burst",
            2 * per_second,
            lambda n: self.integer(n, f"{where}.burst", 1, 10 * _MAX_RATE),
        )
        return Plan(per_second, burst, per_day)
