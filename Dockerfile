# syntax=docker/dockerfile:1.7
#
# One image for every Python service of the shop, and meshctl:
#
#   docker build -t shop-mesh .
#   docker run --rm shop-mesh                                   # meshctl --help
#   docker run --rm shop-mesh python -m services.identity --port 50051
#
# Ports, as the container layout (mesh/deploy/containers.py) uses them: a service's app gRPC on
# 50051 (`--port`), its Prometheus metrics on 9090 (`SHOP_METRICS_PORT`), the edge
# companion (`python -m mesh.control.edge_companion --descriptor-set
# gen/descriptors/shop.binpb ...`) on 50052. Compose and Kubernetes declare the ports and
# the health checks, so this file declares neither.
#
# State lives under /shop, owned by the image's user `shop` (uid and gid 10001):
# certificates in /shop/pki, service data in /shop/run (SHOP_RUN_DIR), NATS data in
# /shop/nats, the edge's files in /shop/edge, your own HTTPS certificate for the edge,
# copied, in /shop/edge-tls, the deny list of API keys the edge companion keeps for the
# edge in /shop/edge-keys. A named volume mounted on one of them takes
# that ownership on its first mount.
#
# The builder stage generates the `shop` package from protos/ (buf and grpcio-tools),
# builds the project's wheel and installs it with the runtime dependencies into /opt/venv;
# the final stage gets that venv and the few files meshctl reads at run time, none of the
# tools. Every package is pinned by constraints.txt (`scripts/lock-constraints` rewrites
# it); its Python version must match the one below.

ARG PYTHON_VERSION=3.11.14

FROM python:${PYTHON_VERSION}-slim-bookworm AS builder

# No compiler here: every dependency must come as a wheel.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ONLY_BINARY=:all:

WORKDIR /src

# The tools that generate code and build the wheel, in a venv that never reaches the image.
COPY constraints.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv-build \
    && /opt/venv-build/bin/pip install --constraint constraints.txt \
        grpcio-tools buf-bin hatchling

COPY pyproject.toml README.md buf.yaml ./
COPY protos/ protos/
COPY mesh/ mesh/
COPY services/ services/

# An editable install gives the build venv `meshctl` and its dependencies without the
# generated package, which `meshctl proto gen` then writes (gen/python/shop and
# gen/descriptors/shop.binpb); the wheel packages it as `shop`.
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv-build/bin/pip install --constraint constraints.txt --no-build-isolation \
        --editable . \
    && /opt/venv-build/bin/meshctl proto gen \
    && /opt/venv-build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /build/dist .

# The runtime venv holds only the project and its pinned dependencies with the `postgres`
# extra (asyncpg) and the `search` extra (search's embedding model): no pip or
# setuptools, installed by the build venv's pip. The import fails the build if the wheel
# lacks the generated package.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv --without-pip /opt/venv \
    && wheel="$(echo /build/dist/shop_mesh-*.whl)" \
    && /opt/venv-build/bin/pip --python /opt/venv/bin/python install \
        --constraint constraints.txt "${wheel}[postgres,search]" \
    && /opt/venv/bin/python -c "import mesh.cli, services.orders, shop.orders.v1.orders_service_pb2_grpc"


FROM python:${PYTHON_VERSION}-slim-bookworm

RUN groupadd --gid 10001 shop \
    && useradd --no-log-init --uid 10001 --gid shop \
        --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin shop \
    && install --directory --owner=shop --group=shop --mode=0750 \
        /shop /shop/pki /shop/run /shop/nats /shop/edge /shop/edge-tls /shop/edge-keys

COPY --from=builder /opt/venv /opt/venv

# meshctl's workspace: it finds /app by buf.yaml and reads the topology, the contracts
# and the descriptor set from there. Owned by root: read-only to the services.
WORKDIR /app
COPY buf.yaml mesh.yaml ./
COPY protos/ protos/
COPY --from=builder /src/gen/descriptors/shop.binpb gen/descriptors/shop.binpb

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SHOP_RUN_DIR=/shop/run

USER 10001:10001

CMD ["meshctl", "--help"]

# Last, so that a new revision rebuilds no layer above.
ARG IMAGE_SOURCE=""
ARG IMAGE_REVISION=""
LABEL org.opencontainers.image.title="shop-mesh" \
      org.opencontainers.image.description="The shop's gRPC services and meshctl: python -m services.<name> --port 50051" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${IMAGE_SOURCE}" \
      org.opencontainers.image.revision="${IMAGE_REVISION}"
