"""Talking to a running Envoy's admin interface, which listens on a unix socket only."""

from __future__ import annotations

import http.client
import socket
import urllib.parse
from collections import Counter
from pathlib import Path


class AdminError(OSError):
    """An Envoy's admin interface answered with an error status."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket (an Envoy's admin has no TCP port)."""

    def __init__(self, socket_path: str | Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = str(socket_path)

    def connect(self) -> None:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(self.timeout)
        try:
            connection.connect(self._socket_path)
        except BaseException:
            connection.close()
            raise
        self.sock = connection


def admin_request(
    socket_path: str | Path, path: str, method: str = "GET", timeout: float = 10.0
) -> tuple[int, bytes]:
    """(status, body) of `method path` on the admin interface at the unix socket
    `socket_path`; OSError when nothing answers there."""
    connection = _UnixHTTPConnection(socket_path, timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as error:  # a broken answer: as if none came
        raise OSError(f"{socket_path}: {error!r}") from error
    finally:
        connection.close()


def admin_get(socket_path: str | Path, path: str, timeout: float = 10.0) -> bytes:
    """The body of `GET path` on the admin interface at `socket_path`; AdminError unless
    it answers 200."""
    status, body = admin_request(socket_path, path, timeout=timeout)
    if status != 200:
        raise AdminError(f"GET {path} on {socket_path}: {status} {body[:200]!r}")
    return body


def admin_ready(socket_path: str | Path, timeout: float = 1.0) -> bool:
    """Whether the Envoy whose admin is at `socket_path` is ready (its `/ready` is 200:
    configuration and certificates loaded, health checks not failed)."""
    try:
        return admin_request(socket_path, "/ready", timeout=timeout)[0] == 200
    except OSError:
        return False


def admin_stats(socket_path: str | Path, pattern: str = "", timeout: float = 10.0) -> Counter[str]:
    """The counters and gauges, by name, of the Envoy whose admin is at the unix socket
    `socket_path`; only those whose name matches the regular expression `pattern`."""
    query = urllib.parse.urlencode({"filter": pattern}) if pattern else ""
    text = admin_get(socket_path, "/stats" + (f"?{query}" if query else ""), timeout).decode()
    found: Counter[str] = Counter()
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            found[name] = int(value)
    return found
