"""The state of a local mesh, `state.json` in its run directory: what the supervisor
writes (atomically) for `meshctl status` and `meshctl down`, and what they read back.

Each instance's health is its last probe's verdict, its rates those between its last two
metrics scrapes; both are kept here, by instance name, between the supervisor's checks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.control.alerting.local import InstanceReading, Reading
from mesh.control.envoy.stats import Counts, read_served
from mesh.control.process import Instance
from mesh.control.procstat import pss_kib
from mesh.runtime import metrics

STATE_FILE = "state.json"


@dataclass(frozen=True)
class Probed:
    """An instance's readiness as a probe found it, and when (monotonic seconds)."""

    ready: bool
    at: float


def health(instance: Instance, probed: Probed | None) -> str:
    """What `state` reports of an instance, given its last probe."""
    if instance.app.restart_at is not None or instance.sidecar.restart_at is not None:
        return "RESTARTING"
    if probed is None or probed.at < instance.started_at:
        return "UNKNOWN"  # not probed since it (re)started
    return "SERVING" if probed.ready else "NOT_SERVING"


@dataclass
class Readings:
    """What the supervisor last learned of each instance, by instance name: its probe,
    its metrics sample and the rates since the sample before, and what its sidecar counted
    of the calls it received."""

    probed: dict[str, Probed] = field(default_factory=dict)
    samples: dict[str, metrics.Sample] = field(default_factory=dict)
    rates: dict[str, metrics.Rates] = field(default_factory=dict)
    served: dict[str, Counts] = field(default_factory=dict)

    def sample_metrics(self, instance: Instance) -> None:
        """Scrape the app's metrics and read its sidecar's counts; keep the rates since
        its previous scrape."""
        name = instance.plan.name
        served = read_served(instance.plan.admin_socket)
        if served is None:
            self.served.pop(name, None)
        else:
            self.served[name] = served
        sample = metrics.scrape(instance.plan.metrics_port)
        if sample is None:
            self.samples.pop(name, None)
            self.rates.pop(name, None)
            return
        if name in self.samples:
            self.rates[name] = metrics.rates(self.samples[name], sample)
        self.samples[name] = sample

    def reading(
        self, instances: list[Instance], at: float, certificates: tuple[tuple[str, float], ...]
    ) -> Reading:
        """The mesh as last read, for its alerts (`mesh.control.alerting.local`)."""
        return Reading(
            at,
            tuple(
                InstanceReading(
                    i.plan.service,
                    i.plan.name,
                    up=i.plan.name in self.samples and i.plan.name in self.served,
                    restarts=i.app.restarts + i.sidecar.restarts,
                    sample=self.samples.get(i.plan.name),
                    served=self.served.get(i.plan.name),
                )
                for i in instances
            ),
            certificates,
        )

    def degraded(self, instance: Instance) -> list[str]:
        """Why the instance needs an operator though it serves (`Sample.degraded`)."""
        sample = self.samples.get(instance.plan.name)
        return sample.degraded() if sample is not None else []

    def events_waiting(self, instance: Instance) -> dict[str, float]:
        """What JetStream holds for each of the instance's consumers (its lag), as it
        last said: its durable consumer's, and its rebuild's while one runs."""
        sample = self.samples.get(instance.plan.name)
        return dict(sample.consumer_pending) if sample is not None else {}

    def rates_of(self, instance: Instance) -> dict[str, Any]:
        rates = self.rates.get(instance.plan.name)
        if rates is None:
            return {}
        return {
            "requests_per_second": round(rates.requests_per_second, 2),
            "error_ratio": round(rates.error_ratio, 4),
            "p99_ms": None if rates.p99_ms is None else round(rates.p99_ms, 2),
        }

    def instance_state(self, instance: Instance) -> dict[str, Any]:
        """What `state.json` says of one instance."""
        plan = instance.plan
        return {
            "service": plan.service,
            "instance": plan.name,
            "version": plan.version,
            "app_pid": instance.app.pid,
            "sidecar_pid": instance.sidecar.pid,
            "app_port": plan.app_port,
            "inbound_port": plan.inbound_port,
            "admin_socket": plan.admin_socket,
            "outbound": dict(plan.outbound),
            "health": health(instance, self.probed.get(plan.name)),
            "degraded": self.degraded(instance),
            "events_waiting": self.events_waiting(instance),
            "restarts": instance.app.restarts + instance.sidecar.restarts,
            "last_exit": instance.app.last_exit,
            "app_pss_kib": pss_kib(instance.app.pid),
            "sidecar_pss_kib": pss_kib(instance.sidecar.pid),
            "metrics_port": plan.metrics_port,
            "rates": self.rates_of(instance),
        }


def memory_pss_kib(state: dict[str, Any]) -> dict[str, int]:
    """The mesh's memory by kind of process, and in total (`total`): the sum of their
    proportional set sizes (`procstat.pss_kib`), in which the pages they share (Envoy's
    binary, the Python interpreter's libraries) count once."""
    edge = state.get("edge") or {}
    parts = {
        "apps": sum(i["app_pss_kib"] for i in state["instances"]),
        "sidecars": sum(i["sidecar_pss_kib"] for i in state["instances"]),
        "edge": edge.get("pss_kib", 0),
        "forkserver": (state.get("forkserver") or {}).get("pss_kib", 0),
        "nats": state["nats"]["pss_kib"],
        "traces": state["traces"]["pss_kib"],
        "console": (state.get("console") or {}).get("pss_kib", 0),
        "supervisor": state["supervisor_pss_kib"],
    }
    return {"total": sum(parts.values()), **parts}


def write_json_atomically(path: Path, data: Any) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)


def read_state(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / STATE_FILE).read_text())
    return data


def all_pids(state: dict[str, Any]) -> list[int]:
    pids = [state.get("supervisor_pid"), state["nats"].get("pid")]
    pids.append(state.get("traces", {}).get("pid"))
    pids.append((state.get("console") or {}).get("pid"))
    if state.get("edge"):
        pids += [state["edge"]["pid"], state["edge"]["companion_pid"]]
    for instance in state["instances"]:
        pids += [instance["app_pid"], instance["sidecar_pid"]]
    pids += (state.get("forkserver") or {}).get("pids", [])
    for scaled in (state.get("autoscale") or {}).values():
        pids += scaled.get("stopping_pids", [])
    return [p for p in pids if p]
