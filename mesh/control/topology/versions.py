"""A service's `versions:`: its releases running side by side, each with its replicas, its
settings and its share of the calls.

    catalog:
      versions:
        v1: {replicas: 2, weight: 90}
        v2: {weight: 10, env: {CATALOG_PAGE_SIZE: "50"}, faults: {abort: {percent: 5}}}

A version without `replicas` runs the service's `replicas` (default 1); `faults` it does
not set are the service's. Weights are percent and add up to 100; when no version names
one, the first takes every call (a canary waiting for `meshctl rollout start`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from types import MappingProxyType

from yaml.nodes import Node

from mesh.control.topology.model import MAX_REPLICAS, TOTAL_WEIGHT, Faults, Version
from mesh.control.topology.nodes import Entries, node_line
from mesh.control.topology.policies import PolicyReader

#: A version's name becomes part of instance, cluster and Kubernetes object names.
_VERSION = re.compile(r"[a-z](?:[a-z0-9-]{0,18}[a-z0-9])?")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
#: Most releases of one service at once: a stable one, a canary, and one being retired.
MAX_VERSIONS = 4

_VERSION_KEYS = {"replicas", "weight", "env", "module", "faults"}


class VersionReader(PolicyReader):
    """Reads `services.<name>.versions`."""

    def versions(
        self, node: Node, where: str, replicas: int, faults: Faults | None
    ) -> tuple[Version, ...]:
        where = f"{where}.versions"
        entries = self.mapping(node, where, None)
        if not entries:
            raise self.error(node, f"{where} names no version; drop `versions:` instead")
        if len(entries) > MAX_VERSIONS:
            raise self.error(node, f"{where} names {len(entries)} versions, at most {MAX_VERSIONS}")
        versions = [
            self.version(name, key, value, f"{where}.{name}", (replicas, faults))
            for name, (key, value) in entries.items()
        ]
        self._check_weights(versions, entries, where, node)
        if not any("weight" in self._keys(value) for _, value in entries.values()):
            first, *rest = versions
            versions = [replace(first, weight=TOTAL_WEIGHT), *rest]
        return tuple(versions)

    def version(
        self, name: str, key: Node, node: Node, where: str, inherited: tuple[int, Faults | None]
    ) -> Version:
        if not _VERSION.fullmatch(name):
            raise self.error(
                key,
                f"{where}: {name!r} is not a version name (lowercase letters, digits and "
                "hyphens, at most 20, starting with a letter, e.g. v2 or canary)",
            )
        replicas, faults = inherited
        entries = self.mapping(node, where, _VERSION_KEYS, null_is_empty=True)
        return Version(
            name=name,
            replicas=self.optional(
                entries, "replicas", replicas,
                lambda n: self.integer(n, f"{where}.replicas", 1, MAX_REPLICAS),
            ),
            weight=self.optional(
                entries, "weight", 0, lambda n: self.integer(n, f"{where}.weight", 0, TOTAL_WEIGHT)
            ),
            env=self.optional(entries, "env", MappingProxyType({}), lambda n: self.env(n, where)),
            module=self.optional(entries, "module", None, lambda n: self.module(n, where)),
            faults=self.optional(entries, "faults", faults, lambda n: self.faults(n, where)),
        )  # fmt: skip

    def env(self, node: Node, where: str) -> MappingProxyType[str, str]:
        variables: dict[str, str] = {}
        for name, (key, value) in self.mapping(node, f"{where}.env", None).items():
            if not _ENV_NAME.fullmatch(name):
                raise self.error(
                    key, f"{where}.env: {name!r} is not an environment variable name (A-Z, 0-9, _)"
                )
            variables[name] = self.string(value, f"{where}.env.{name} (quote numbers)")
        return MappingProxyType(variables)

    def module(self, node: Node, where: str) -> str:
        module = self.string(node, f"{where}.module")
        if not _MODULE.fullmatch(module):
            raise self.error(node, f"{where}.module {module!r} is not a Python module name")
        return module

    def _keys(self, node: Node) -> Entries:
        return self.mapping(node, "a version", _VERSION_KEYS, null_is_empty=True)

    def _check_weights(
        self, versions: list[Version], entries: Entries, where: str, node: Node
    ) -> None:
        weighted = [v for v in versions if "weight" in self._keys(entries[v.name][1])]
        if not weighted:
            return
        total = sum(v.weight for v in versions)
        if total != TOTAL_WEIGHT:
            shares = ", ".join(f"{v.name} {v.weight}" for v in versions)
            raise self.error(
                node_line(node),
                f"{where}: the weights add up to {total} ({shares}); they must add up to "
                f"{TOTAL_WEIGHT} (percent of the service's calls)",
            )
