#!/usr/bin/env bash
# The edge over HTTPS: REST with curl, native gRPC with grpcurl, both verifying the edge's
# certificate against the mesh CA (mesh.yaml's `edge.https`; `meshctl status` prints both).
#
#   examples/https.sh [HOST:PORT] [CA_FILE]      # default 127.0.0.1:8443 .mesh/pki/ca/ca.pem
set -euo pipefail

edge=${1:-127.0.0.1:8443}
ca=${2:-.mesh/pki/ca/ca.pem}
grpcurl=$(dirname "$0")/../.venv/bin/grpcurl

# REST, over HTTP/2 (ALPN h2): the version curl negotiated is the last line.
curl --silent --show-error --fail --cacert "$ca" --write-out '\nHTTP/%{http_version}\n' \
  "https://$edge/v1/products?pageSize=1"

# gRPC over TLS: what the edge serves (reflection), then a public call.
"$grpcurl" -cacert "$ca" "$edge" list
"$grpcurl" -cacert "$ca" -d '{"page_size": 1}' "$edge" shop.catalog.v1.CatalogService/ListProducts
