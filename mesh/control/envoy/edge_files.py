"""What the edge serves itself, beside the API: the descriptor set transcoding reads, the
OpenAPI document, the API docs page (Swagger UI) and their paths."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import swagger_ui_bundle  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2

from mesh.control import openapi
from mesh.control.envoy.edge_rules import EdgeRules
from mesh.control.topology import Topology

#: The edge's own pages; they need no token.
OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
HEALTH_PATH = "/healthz"
JWKS_PATH = "/.well-known/jwks.json"
#: Swagger UI's files the docs page loads, served under /docs/.
DOCS_ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui-standalone-preset.js": "application/javascript",
}


@dataclass(frozen=True)
class EdgeFiles:
    """What the edge serves itself, rendered into the run directory."""

    descriptor_set: Path
    openapi: Path
    docs_page: Path
    docs_assets: Path


_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{openapi}",
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "BaseLayout",
    }});
  </script>
</body>
</html>
"""


def files_in(directory: Path) -> EdgeFiles:
    """Where `write_files` puts the edge's files in `directory`."""
    return EdgeFiles(
        descriptor_set=directory / "descriptors.binpb",
        openapi=directory / "openapi.json",
        docs_page=directory / "docs.html",
        docs_assets=directory / "docs",
    )


def write_files(
    directory: Path, descriptor_set: Path, topology: Topology, rules: EdgeRules, url: str
) -> EdgeFiles:
    """The descriptor set, OpenAPI document, docs page and Swagger UI assets the edge serves
    (the OpenAPI document names the edge at `url`)."""
    files = files_in(directory)
    files.docs_assets.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(descriptor_set, files.descriptor_set)
    document = openapi.build_openapi(
        descriptor_pb2.FileDescriptorSet.FromString(files.descriptor_set.read_bytes()),
        services=rules.exposed.keys(),
        public_methods=rules.public,
        scopes=rules.scopes,
        server_url=url,
        api_keys=bool(topology.edge.api_keys.plans),
    )
    openapi.write_openapi(document, files.openapi)
    files.docs_page.write_text(
        _DOCS_PAGE.format(title=document["info"]["title"], openapi=OPENAPI_PATH)
    )
    for name in DOCS_ASSETS:
        shutil.copyfile(Path(swagger_ui_bundle.swagger_ui_path) / name, files.docs_assets / name)
    return files
