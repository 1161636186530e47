"""Fixtures shared by every kind of test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer, running_postgres


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-full",
        action="store_true",
        help="run the full form of each `meshctl chaos` scenario (minutes), not the short one",
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server (tests/support/postgres.py), started when a test
    first needs it and stopped by its pid when the session ends."""
    with running_postgres() as server:
        yield server
