"""How the mesh starts a service's app: the environment its plan and mesh.yaml give it
(the variables `mesh.runtime.service` reads)."""

from __future__ import annotations

from pathlib import Path

from mesh.control.plan import InstancePlan
from mesh.control.topology import Service
from mesh.runtime import metrics, telemetry
from mesh.runtime.admission import Limits
from mesh.runtime.events import NatsSettings
from mesh.runtime.telemetry import TelemetrySettings


def environment(
    instance: InstancePlan,
    service: Service,
    *,
    run_dir: Path,
    telemetry_settings: TelemetrySettings,
    trace_endpoint: str,
    nats: NatsSettings,
) -> dict[str, str]:
    """The variables (see the table above) that start `instance`'s app in the mesh."""
    return {
        "SHOP_RUN_DIR": str(run_dir),
        "PYTHONUNBUFFERED": "1",
        "SHOP_INSTANCE": instance.name,
        **telemetry.tracing_environment(telemetry_settings, trace_endpoint),
        metrics.PORT_VARIABLE: str(instance.metrics_port),
        **limits_of(service).environment(),
        **nats.environment(),
        **{
            f"SHOP_{dependency.upper()}_ADDRESS": f"127.0.0.1:{port}"
            for dependency, port in sorted(instance.outbound.items())
        },
        **service.release(instance.version).env,
    }


def app_module(instance: InstancePlan, service: Service) -> str:
    """The module `instance`'s app runs: its version's, else `services.<service>`."""
    return service.release(instance.version).module or f"services.{instance.service}"


def limits_of(service: Service) -> Limits:
    """The admission limits mesh.yaml gives `service`'s apps."""
    return Limits(
        max_in_flight=service.admission.max_in_flight,
        expensive_in_flight=service.admission.expensive_in_flight,
        expensive_methods=service.expensive_methods,
        backlog=service.admission.backlog,
    )
