"""`meshctl up`: services start as processes, answer, and stop by pid with the supervisor."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from mesh.binaries import find_binary

pytestmark = pytest.mark.integration

READY_WITHIN_SECONDS = 60


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def mesh_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, tuple[str, int]]]]:
    """`meshctl up catalog inventory`, read until ready; stopped by pid whatever happens."""
    process = subprocess.Popen(
        [find_binary("meshctl"), "up", "catalog", "inventory", "--run-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    services: dict[str, tuple[str, int]] = {}
    try:
        assert process.stdout is not None
        for line in process.stdout:
            found = re.match(r"\s+(\w+)\s+grpc://(\S+)\s+pid (\d+)", line)
            if found:
                services[found.group(1)] = (found.group(2), int(found.group(3)))
            if line.startswith("ready"):
                break
        else:
            pytest.fail(f"meshctl up ended before ready (exit {process.wait()})")
        yield process, services
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for _, pid in services.values():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if process.stdout is not None:
            process.stdout.close()


def test_up_serves_each_service_and_stops_them_all(
    mesh_up: tuple[subprocess.Popen[str], dict[str, tuple[str, int]]],
) -> None:
    process, services = mesh_up
    assert set(services) == {"catalog", "inventory"}
    catalog, _ = services["catalog"]

    listing = subprocess.run(
        [find_binary("grpcurl"), "-plaintext", catalog, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "shop.catalog.v1.CatalogService" in listing.split()

    # Creating a product with stock crosses from catalog to inventory.
    request = {
        "product": {
            "name": "Tea",
            "category": "food",
            "price": {"currency_code": "EUR", "units": 4},
        },
        "initial_stock": 5,
    }
    created = subprocess.run(
        [
            find_binary("grpcurl"),
            "-plaintext",
            "-d",
            json.dumps(request),
            catalog,
            "shop.catalog.v1.CatalogService/CreateProduct",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    product_id = json.loads(created.stdout)["product"]["id"]
    inventory, _ = services["inventory"]
    stock = subprocess.run(
        [
            find_binary("grpcurl"),
            "-plaintext",
            "-d",
            json.dumps({"product_id": product_id}),
            inventory,
            "shop.inventory.v1.InventoryService/GetStock",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert stock.returncode == 0, stock.stdout + stock.stderr
    assert json.loads(stock.stdout)["stock"]["onHand"] == 5

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert not [name for name, (_, pid) in services.items() if _alive(pid)]


def test_up_names_an_unknown_service(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mesh.cli", "up", "nope", "--run-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "no such service: nope" in result.stderr
    assert "Traceback" not in result.stderr


def test_token_mints_a_jwt_for_the_subject_and_scopes(tmp_path: Path) -> None:
    minted = subprocess.run(
        [
            find_binary("meshctl"),
            "token",
            "--subject",
            "user-1",
            "--scope",
            "catalog:write",
            "--run-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    header = jwt.get_unverified_header(minted)
    claims = jwt.decode(minted, options={"verify_signature": False})
    assert header["alg"] == "RS256"
    assert header["kid"]
    assert (claims["sub"], claims["scope"]) == ("user-1", "catalog:write")
    assert claims["exp"] > claims["iat"]
