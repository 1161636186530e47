"""A service's `autoscale:`: its replicas follow its load.

    services:
      catalog:
        autoscale: {min: 1, max: 4, target: {in_flight: 3}, cooldown: 60s}

`target` names one metric and its value per replica: `cpu` (percent of one core each
app uses), `in_flight` (calls each app works on at once) or `consumer_lag` (events
waiting for the service's consumers, per replica; only a service that `consumes` events).
A service that autoscales starts `min` replicas, so it takes no `replicas:`; it runs one
release (no `versions:`) on free ports (no `ports:`).
"""

from __future__ import annotations

from yaml.nodes import Node

from mesh.control.topology.model import (
    AUTOSCALE_METRICS,
    CONSUMER_LAG,
    CPU,
    MAX_REPLICAS,
    Autoscale,
)
from mesh.control.topology.nodes import Entries, NodeReader

_KEYS = {"min", "max", "target", "cooldown"}
#: Keys a service that autoscales may not have beside `autoscale:`, and why.
_EXCLUSIVE = {
    "replicas": "it starts `autoscale.min` replicas",
    "versions": "a service with versions is scaled by its rollout, not by its load",
    "ports": "the replicas it adds pick free ports",
}


class AutoscaleReader(NodeReader):
    """Reads `services.<name>.autoscale`."""

    def autoscale(self, entries: Entries, where: str, consumes: tuple[str, ...]) -> Autoscale:
        """The `autoscale:` of the service at `where`, whose entries are `entries`."""
        for key, why in _EXCLUSIVE.items():
            if key in entries:
                raise self.error(
                    entries[key][0],
                    f"{where}: a service with `autoscale:` takes no `{key}:` ({why})",
                )
        node = entries["autoscale"][1]
        here = f"{where}.autoscale"
        fields = self.mapping(node, here, _KEYS)
        low = self.integer(self.required(fields, "min", here, node), f"{here}.min", 1, MAX_REPLICAS)
        high = self.integer(
            self.required(fields, "max", here, node), f"{here}.max", 1, MAX_REPLICAS
        )
        if high < low:
            raise self.error(fields["max"][1], f"{here}.max ({high}) is below its min ({low})")
        metric, target = self.target(self.required(fields, "target", here, node), here)
        if metric == CONSUMER_LAG and not consumes:
            raise self.error(
                fields["target"][1],
                f"{here}.target: consumer_lag needs a service that consumes events "
                f"(`consumes:`); {where} consumes none",
            )
        cooldown = self.optional(
            fields, "cooldown", Autoscale.cooldown, lambda n: self.duration(n, f"{here}.cooldown")
        )
        return Autoscale(low, high, metric, target, cooldown)

    def target(self, node: Node, where: str) -> tuple[str, float]:
        """The one metric `target` names, and its value per replica."""
        fields = self.mapping(node, f"{where}.target", set(AUTOSCALE_METRICS))
        if len(fields) != 1:
            raise self.error(
                node,
                f"{where}.target names one metric of {', '.join(AUTOSCALE_METRICS)} "
                "and its value per replica (e.g. {in_flight: 3})",
            )
        [(metric, (_, value))] = fields.items()
        if metric == CPU:
            percent = self.percent(value, f"{where}.target.cpu")
            if percent <= 0:
                raise self.error(value, f"{where}.target.cpu must be above 0 (percent of a core)")
            return metric, percent
        return metric, float(self.integer(value, f"{where}.target.{metric}", 1, 1_000_000))
