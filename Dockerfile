# syntax=docker/dockerfile:1
#
# gradserve container image.
#
#   CPU (default):  docker build -t gradserve:cpu .
#   NVIDIA GPU:     docker build --build-arg VARIANT=cuda -t gradserve:cuda .
#                   docker run --gpus all -p 8000:8000 gradserve:cuda gradserve serve --device gpu
#
# Dependencies come from pyproject.toml only (`pip install .` or `.[cuda]`), the same source
# the README's `make serve` / `make test` install from. Nothing here lists packages by hand.

# cpu | cuda
ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# jax[cuda12] brings CUDA, cuDNN, cuBLAS etc. as pip wheels, so the CUDA image only has to
# provide the NVIDIA container runtime wiring; any CUDA 12 runtime/cudnn-runtime tag also works.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu22.04

# ---------------------------------------------------------------------------------------------
# Base images: the same Python interpreter at the same path in builder and runtime, so the
# virtual environment built in the builder runs unchanged in the runtime stage.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base-cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

FROM ${CUDA_IMAGE} AS base-cuda
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DEBIAN_FRONTEND=noninteractive
# Ubuntu 22.04 ships Python 3.11 in jammy-updates. Versions are not pinned: the Ubuntu archive
# drops superseded package versions, so a pin would break the build after the next security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && ln -sf /usr/bin/python3.11 /usr/local/bin/python3 \
    && ln -sf /usr/bin/python3.11 /usr/local/bin/python

# ---------------------------------------------------------------------------------------------
# Builder: a venv with gradserve and its runtime dependencies, from pyproject.toml.
# ---------------------------------------------------------------------------------------------
# DL3006 is a false positive here: base-${VARIANT} names one of the two stages above (each with
# a tagged image), which hadolint cannot resolve through the build argument.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS builder
ARG VARIANT
WORKDIR /src
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY service ./service
COPY gradserve_client ./gradserve_client
COPY gradserve_loadtest ./gradserve_loadtest
RUN if [ "${VARIANT}" = "cuda" ]; then \
        pip install --no-cache-dir "./[cuda]"; \
    else \
        pip install --no-cache-dir .; \
    fi \
    && gradserve --help > /dev/null

# ---------------------------------------------------------------------------------------------
# Runtime: the venv, a non-root user and /data for the registry and the XLA compile cache.
# ---------------------------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG VARIANT
LABEL org.opencontainers.image.title="gradserve" \
      org.opencontainers.image.description="Gradients with MindSpore GradOperation semantics on JAX, over HTTP"

RUN groupadd --system --gid 10001 gradserve \
    && useradd --system --uid 10001 --gid gradserve --home-dir /home/gradserve --create-home \
       --shell /usr/sbin/nologin gradserve \
    && mkdir -p /data/xla-cache \
    && chown -R gradserve:gradserve /data

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    GRADSERVE_VARIANT=${VARIANT} \
    GRADSERVE_HOST=0.0.0.0 \
    GRADSERVE_PORT=8000 \
    GRADSERVE_REGISTRY_PATH=/data/registry.sqlite3 \
    GRADSERVE_COMPILE_CACHE_DIR=/data/xla-cache \
    MPLCONFIGDIR=/tmp/matplotlib

# numeric uid:gid, so runtimes that enforce runAsNonRoot can check it
USER 10001:10001
WORKDIR /home/gradserve
VOLUME ["/data"]
EXPOSE 8000

# python's urllib, since the slim image has no curl; a non-2xx answer or no answer exits 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('GRADSERVE_PORT', '8000'), timeout=4)"]

CMD ["gradserve", "serve"]
