"""The replicas of the local mesh's autoscaled services, added and removed as their load
asks (`mesh.control.autoscaler` decides how many).

Every replica a service may run has its place in the plan from the start (its ports, its
certificate, its sidecar's configuration); those above `min` wait, not running. Adding
one starts its sidecar and app; once both are ready it joins the endpoints its callers
read (`mesh.control.envoy.endpoints`). Removing one takes it out of the endpoints first,
so no caller sends it a new call; once its sidecar has no call in flight (or after
`DRAIN_LIMIT_SECONDS`), its app and sidecar are stopped, and it waits again. Only one
replica of a service joins or drains at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.control.autoscaler import ReplicaLoad, Scaling
from mesh.control.envoy import endpoints
from mesh.control.envoy.admin import AdminError, admin_stats
from mesh.control.plan import MeshPlan
from mesh.control.process import Instance
from mesh.control.procstat import usage
from mesh.control.routing import cluster_name
from mesh.control.state import Readings
from mesh.control.topology import Topology

log = logging.getLogger(__name__)

#: Seconds a removed replica keeps serving at least: callers' Envoys read the new
#: endpoints within milliseconds, and a call they had already sent still arrives.
DRAIN_MIN_SECONDS = 1.0
#: Seconds after which a draining replica is stopped with calls still in flight.
DRAIN_LIMIT_SECONDS = 30.0
#: Seconds a new replica has to become ready; one that does not (its port taken since
#: the plan was made, say) is stopped and waits at the end of the line.
JOIN_LIMIT_SECONDS = 60.0
#: Seconds a stopped replica's processes get to exit before they are killed.
STOP_GRACE_SECONDS = 10.0
#: The sidecar's gauges of calls in flight: received, and sent to its app.
_IN_FLIGHT = r"^(http\.inbound\.downstream_rq_active|cluster\.local_app[^.]*\.upstream_rq_active)$"


@dataclass
class _Service:
    """One autoscaled service: its replicas by state, and its decisions."""

    scaling: Scaling
    waiting: list[Instance]
    """Not running, by index: the next to start first."""
    joining: tuple[Instance, float] | None = None
    """The replica starting, and when it started (monotonic)."""
    draining: tuple[Instance, float] | None = None
    """The replica leaving, and when it left the endpoints (monotonic)."""
    desired: int = 0


@dataclass
class Replicas:
    """The autoscaled services' replicas; `running` is the supervisor's list of running
    instances, which this adds to and takes from."""

    topology: Topology
    plan: MeshPlan
    root: Path
    running: list[Instance]
    ready: Callable[[Instance], bool]
    say: Callable[[str], None]
    services: dict[str, _Service] = field(default_factory=dict)
    stopping: list[tuple[Instance, float]] = field(default_factory=list)
    _last: set[str] = field(default_factory=set)

    def place(self, prepared: list[Instance]) -> list[Instance]:
        """Of every prepared instance, those that start with the mesh; the others wait.
        Writes the starting replicas' endpoints."""
        starting = {i.name for i in self.plan.running_at_start(self.topology)}
        for name, service in self.topology.services.items():
            if service.autoscale is not None:
                waiting = [i for i in prepared if i.plan.service == name]
                waiting = [i for i in waiting if i.plan.name not in starting]
                self.services[name] = _Service(Scaling(service.autoscale), waiting)
        started = [i for i in prepared if i.plan.name in starting]
        for name in self.services:
            self._write_endpoints(name, [i for i in started if i.plan.service == name])
        return started

    def tick(self, readings: Readings, now: float) -> None:
        """Decide each service's replicas from `readings`; move joining, draining and
        stopping replicas on."""
        for name, service in self.services.items():
            self._join(name, service, now)
            self._drain(name, service, now)
            if service.joining is None and service.draining is None:
                self._decide(name, service, readings, now)
        self._reap(now)

    def leftover(self) -> list[Instance]:
        """The replicas stopping, which the supervisor's own stop must wait for too."""
        return [instance for instance, _ in self.stopping]

    def state(self) -> dict[str, Any]:
        """Each autoscaled service's replicas and metric, for `state.json`."""
        return {
            name: {
                "replicas": len(self._of(name)),
                "desired": service.desired,
                "min": service.scaling.spec.min,
                "max": service.scaling.spec.max,
                "metric": service.scaling.spec.metric,
                "target": service.scaling.spec.target,
                "value": None if service.scaling.value is None else round(service.scaling.value, 2),
                "joining": service.joining[0].plan.name if service.joining else None,
                "draining": service.draining[0].plan.name if service.draining else None,
                "stopping_pids": [
                    pid
                    for instance in self.leftover()
                    if instance.plan.service == name
                    for pid in (instance.app.pid, instance.sidecar.pid)
                    if pid
                ],
            }
            for name, service in self.services.items()
        }

    # -- deciding ---------------------------------------------------------------------------

    def _decide(self, name: str, service: _Service, readings: Readings, now: float) -> None:
        replicas = self._of(name)
        loads = {i.plan.name: _load(i, readings) for i in replicas}
        service.desired = service.scaling.desired(now, loads)
        if service.desired > len(replicas) and service.waiting:
            self._start(name, service, now)
        elif service.desired < len(replicas) and len(replicas) > 1:
            self._leave(name, service, replicas[-1], now)

    def _of(self, service: str) -> list[Instance]:
        return sorted(
            (i for i in self.running if i.plan.service == service), key=lambda i: i.plan.index
        )

    # -- joining ----------------------------------------------------------------------------

    def _start(self, name: str, service: _Service, now: float) -> None:
        instance = service.waiting.pop(0)
        instance.sidecar.start(self.root)
        instance.app.start(self.root)
        self.running.append(instance)
        service.joining = (instance, now)
        self.say(f"{name}: adding {instance.plan.name} ({self._why(service)})")

    def _join(self, name: str, service: _Service, now: float) -> None:
        if service.joining is None:
            return
        instance, since = service.joining
        if self.ready(instance):
            service.joining = None
            self._write_endpoints(name, self._serving(name))
            self.say(f"{name}: {instance.plan.name} ready, taking calls")
        elif now - since > JOIN_LIMIT_SECONDS:
            service.joining = None
            self._stop(instance, now, last=True)
            self.say(f"{name}: {instance.plan.name} not ready after {JOIN_LIMIT_SECONDS:g} s")

    # -- leaving ----------------------------------------------------------------------------

    def _leave(self, name: str, service: _Service, instance: Instance, now: float) -> None:
        service.draining = (instance, now)
        self._write_endpoints(name, [i for i in self._serving(name) if i is not instance])
        self.say(f"{name}: draining {instance.plan.name} ({self._why(service)})")

    def _drain(self, name: str, service: _Service, now: float) -> None:
        if service.draining is None:
            return
        instance, since = service.draining
        waited = now - since
        if waited < DRAIN_MIN_SECONDS:
            return
        if waited < DRAIN_LIMIT_SECONDS and _in_flight(instance):
            return  # calls in flight still (none, or no answer: it is done)
        service.draining = None
        self._stop(instance, now)
        self.say(f"{name}: stopping {instance.plan.name} after {waited:.1f} s of draining")

    def _stop(self, instance: Instance, now: float, *, last: bool = False) -> None:
        """Out of the running, its app told to stop; it waits again once stopped (at the
        end of the line when `last`)."""
        self.running.remove(instance)
        instance.app.terminate()
        self.stopping.append((instance, now))
        if last:
            self._last.add(instance.plan.name)

    def _reap(self, now: float) -> None:
        """Stop the sidecar once its app has exited; kill what outlives the grace; a
        stopped replica waits again, first in line."""
        for instance, since in list(self.stopping):
            late = now - since > STOP_GRACE_SECONDS
            if instance.app.process is not None and instance.app.process.poll() is None:
                if not late:
                    continue
                instance.app.wait_or_kill(now)
            instance.sidecar.terminate()
            instance.sidecar.wait_or_kill(time.monotonic() + STOP_GRACE_SECONDS)
            instance.app.wait_or_kill(time.monotonic())
            self.stopping.remove((instance, since))
            waiting = self.services[instance.plan.service].waiting
            if instance.plan.name in self._last:
                self._last.discard(instance.plan.name)
                waiting.append(instance)
            else:
                waiting.insert(0, instance)

    # -- endpoints ----------------------------------------------------------------------------

    def _serving(self, name: str) -> list[Instance]:
        """The running replicas that take calls: not joining, not draining."""
        service = self.services[name]
        leaving = service.draining[0] if service.draining else None
        joining = service.joining[0] if service.joining else None
        return [i for i in self._of(name) if i is not joining and i is not leaving]

    def _write_endpoints(self, name: str, serving: list[Instance]) -> None:
        addresses = [(i.plan.host, i.plan.inbound_port) for i in serving]
        endpoints.write(self.plan.endpoints_dir, cluster_name(name, ""), addresses)

    def _why(self, service: _Service) -> str:
        spec, value = service.scaling.spec, service.scaling.value
        shown = "-" if value is None else f"{value:.1f}"
        return (
            f"{spec.metric} {shown}, target {spec.target:g} per replica, {service.desired} wanted"
        )


def _load(instance: Instance, readings: Readings) -> ReplicaLoad:
    name = instance.plan.name
    cpu = usage(instance.app.pid)
    served = readings.served.get(name)
    sample = readings.samples.get(name)
    lag = max(sample.consumer_pending.values(), default=0.0) if sample else 0.0
    return ReplicaLoad(
        cpu.cpu_seconds if cpu else None, served.busy if served else None, consumer_lag=lag
    )


def _in_flight(instance: Instance) -> int | None:
    """Calls the replica's sidecar holds now; None when it does not answer."""
    try:
        return sum(admin_stats(instance.plan.admin_socket, _IN_FLIGHT, timeout=1.0).values())
    except (AdminError, OSError):
        return None
