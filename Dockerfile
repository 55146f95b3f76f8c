# syntax=docker/dockerfile:1
#
# JupyterHub federation proxy image.
#
#   docker build -t registry.example.org/jupyterhub/federation-proxy:0.2.0 .
#
# No image is published by the project: build and push your own (docs/operations.md, section 0).
#
# Stage 1 builds wheels for the project and all its dependencies; stage 2
# installs them into a clean python:3.11-slim with no build tools and runs as
# the unprivileged user 10001 (the Helm chart's runAsUser).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# pyproject.toml, README.md, federation/ ... (see .dockerignore for what is left out)
COPY . .
RUN pip wheel . -w /wheels


FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="jupyterhub-federation-proxy" \
      org.opencontainers.image.description="configurable-http-proxy compatible API that writes Istio routes into the clusters hosting JupyterHub user servers" \
      org.opencontainers.image.source="https://github.com/jupyterhub-federation/federation-proxy" \
      org.opencontainers.image.licenses="BSD-3-Clause"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install from the builder's wheels only (no index, no compiler), without
# copying the wheels into a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels jupyterhub-federation-proxy \
 && groupadd --system --gid 10001 federation \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin federation \
 && mkdir -p /etc/federation \
 && federation --help >/dev/null

# Numeric user so that Kubernetes can verify runAsNonRoot.
USER 10001:10001
WORKDIR /tmp

EXPOSE 8001

ENTRYPOINT ["federation"]
CMD ["serve", "--config", "/etc/federation/clusters.yaml", "--host", "0.0.0.0", "--port", "8001"]
