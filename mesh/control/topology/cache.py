"""The edge's `cache:`: how long the edge may keep the answer of a public read.

    edge:
      cache:
        catalog.GetProduct: 10s     # method name -> max-age, in whole seconds
        catalog.ListProducts: 10s

A name means its method in every API version, as in `edge.auth`. Only a public method
(`edge.auth.public`) with an HTTP GET binding may be cached, which only the contracts can
confirm (`mesh.control.conformance`); a change is visible at the edge within its max-age
at most (`mesh.control.envoy.edge_cache`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from yaml.nodes import Node

from mesh.control.topology.nodes import Entries, NodeReader, node_line

#: The longest max-age: a change stays unseen at the edge for as long, with no purge.
MAX_AGE_LIMIT_SECONDS = 86_400
_METHOD = re.compile(r"[a-z][a-z0-9-]*\.[A-Z][A-Za-z0-9]*")


class CacheReader(NodeReader):
    """Reads `edge.cache`."""

    def edge_cache(self, entries: Entries) -> tuple[Mapping[str, float], Mapping[str, int]]:
        """The max-age of each method `edge.cache` names, and the line of each (none and
        none without it)."""
        if "cache" not in entries:
            return MappingProxyType({}), MappingProxyType({})
        ages: dict[str, float] = {}
        lines: dict[str, int] = {}
        named = self.mapping(entries["cache"][1], "edge.cache", None, null_is_empty=True)
        for name, (key, value) in named.items():
            if not _METHOD.fullmatch(name):
                raise self.error(
                    key,
                    f"edge.cache key {name!r} must name a method as <service>.<Method> "
                    "(e.g. catalog.GetProduct)",
                )
            ages[name] = self.max_age(value, f"edge.cache.{name}")
            lines[name] = node_line(key)
        return MappingProxyType(ages), MappingProxyType(lines)

    def max_age(self, node: Node, where: str) -> float:
        """A duration of whole seconds, 1s to a day: what `Cache-Control: max-age` says."""
        seconds = self.duration(node, where)
        if seconds != int(seconds) or not 1 <= seconds <= MAX_AGE_LIMIT_SECONDS:
            raise self.error(
                node,
                f"{where} must be whole seconds from 1s to {MAX_AGE_LIMIT_SECONDS // 3600}h "
                f"(a max-age counts seconds), got {self.describe(node)}",
            )
        return seconds
