"""The edge's `https:` and `http:`: HTTPS on a port of its own, and what plain HTTP does.

    edge:
      port: 8080
      http: redirect            # on (the default) | off | redirect
      https:
        port: 8443
        hosts: [shop.example]   # the mesh CA's certificate names these too
        # cert_file: certs/shop.pem, key_file: certs/shop-key.pem   # or your own

Plain HTTP may be off or redirect only when there is HTTPS to go to. The certificate is
the mesh CA's unless both `cert_file` and `key_file` name the user's own; `hosts` then
has nothing to name, since the certificate's own names are what clients check.
"""

from __future__ import annotations

import ipaddress
import re
from types import MappingProxyType

from yaml.nodes import Node

from mesh.control.topology.model import (
    DEFAULT_HTTPS_PORT,
    HTTP_MODES,
    HTTP_OFF,
    HTTP_ON,
    EdgeHttps,
)
from mesh.control.topology.nodes import MAX_PORT, Entries, NodeReader, node_line

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
#: A DNS name a certificate may carry: labels, the first of them possibly a wildcard.
_HOST = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_FILES = ("cert_file", "key_file")


class HttpsReader(NodeReader):
    """Reads `edge.https` and `edge.http`."""

    def http_mode(self, node: Node) -> str:
        # `on` and `off` are booleans in YAML 1.1 (and a file read and written again by a
        # YAML library says true and false): either way, they mean on and off.
        value = self.scalar(node)
        if isinstance(value, bool):
            return HTTP_ON if value else HTTP_OFF
        if value not in HTTP_MODES:
            raise self.error(
                node, f"edge.http must be one of {', '.join(HTTP_MODES)}, got {self.describe(node)}"
            )
        return str(value)

    def edge_https(self, node: Node) -> EdgeHttps:
        where = "edge.https"
        entries = self.mapping(node, where, {"port", "hosts", *_FILES}, null_is_empty=True)
        port = self.optional(
            entries,
            "port",
            DEFAULT_HTTPS_PORT,
            lambda n: self.integer(n, f"{where}.port", 0, MAX_PORT),
        )
        hosts: list[str] = []
        for item in self.sequence(entries, "hosts", f"{where}.hosts must be a list of host names"):
            host = self.host(item)
            if host in hosts:
                raise self.error(item, f"{where}.hosts names {host!r} twice")
            hosts.append(host)
        files = self.certificate_files(entries)
        if files and hosts:
            raise self.error(
                entries["hosts"][0],
                f"{where}.hosts names what the mesh CA's certificate carries; with your own "
                "certificate (cert_file) its own names are what clients check: drop hosts",
            )
        return EdgeHttps(
            port,
            tuple(hosts),
            files.get("cert_file"),
            files.get("key_file"),
            MappingProxyType({key: node_line(entries[key][1]) for key in files}),
        )

    def host(self, node: Node) -> str:
        value = self.string(node, "an edge.https.hosts entry")
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            pass
        if len(value) > 253 or not _HOST.fullmatch(value):
            raise self.error(
                node,
                f"edge.https.hosts entry {value!r} is neither a DNS name (lowercase, as in "
                "shop.example or *.shop.example) nor an IP address",
            )
        return value

    def certificate_files(self, entries: Entries) -> dict[str, str]:
        """`cert_file` and `key_file`, both or neither."""
        files = {
            key: self.string(entries[key][1], f"edge.https.{key}")
            for key in _FILES
            if key in entries
        }
        if len(files) == 1:
            [given] = files
            [missing] = set(_FILES) - {given}
            raise self.error(
                entries[given][0],
                f"edge.https.{given} needs {missing} too: a certificate and its key",
            )
        return files
