"""mesh.yaml's `consumes:` and the services' event handlers name the same subjects.

The mesh creates each consumer from mesh.yaml and NATS lets a service read nothing
else, while the code decides what it can handle; a service also refuses to start when
the two differ (`EventConsumer.bind`). This catches the drift before anything runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mesh.control.contracts import Workspace
from mesh.control.topology import load
from services.inventory import saga as inventory
from services.notifications import saga as notifications
from services.orders import saga as orders
from services.payments import saga as payments
from services.search import projection as search
from services.search.handlers import SemanticIndex
from services.shipping import saga as shipping
from shop.events.v1 import events_pb2

ROOT = Workspace.find(Path(__file__).parent).root
HANDLERS: dict[str, Any] = {
    "inventory": inventory.handlers(lambda connection: None),  # type: ignore[arg-type,return-value]
    "orders": orders.handlers(lambda connection: None),  # type: ignore[arg-type,return-value]
    "payments": payments.handlers(lambda connection: None, None),  # type: ignore[arg-type,return-value]
    "shipping": shipping.handlers(lambda connection: None),  # type: ignore[arg-type,return-value]
    "notifications": notifications.handlers(lambda connection: None),  # type: ignore[arg-type,return-value]
    "search": search.handlers(lambda connection: None, SemanticIndex(None)),  # type: ignore[arg-type,return-value]
}


@pytest.mark.parametrize("service", sorted(load(ROOT / "mesh.yaml").services))
def test_each_service_handles_exactly_what_mesh_yaml_says_it_consumes(service: str) -> None:
    declared = load(ROOT / "mesh.yaml").services[service].consumed_subjects
    assert sorted(HANDLERS.get(service, {})) == sorted(declared)


def test_every_consumed_subject_is_an_event_of_the_contract() -> None:
    events = {f.name for f in events_pb2.EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields}
    for service in load(ROOT / "mesh.yaml").services.values():
        for entry in service.consumes:
            assert entry.partition(".")[2] in events, f"{service.name}: {entry}"
