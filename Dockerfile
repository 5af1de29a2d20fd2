# syntax=docker/dockerfile:1
#
# gradserve container image.
#
#   CPU (default):  docker build -t gradserve:cpu .
#   NVIDIA GPU:     docker build --build-arg VARIANT=cuda -t gradserve:cuda .
#                   docker run --gpus all -p 8000:8000 gradserve:cuda gradserve serve --device gpu
#
# deploy/container-test.sh builds this file with podman and checks the running container
# (README, "Deployment").
#
# Dependencies come from pyproject.toml only (`pip install .` or `.[cuda]`), the same source
# the README's `make serve` / `make test` install from. Nothing here lists packages by hand.

# cpu | cuda
ARG VARIANT=cpu
# Both variants start from this image. CI on machines that cannot pull it passes a stand-in
# (Debian bookworm with its python3.11, made by deploy/container-test.sh).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# Base images: the same Python interpreter at the same path in builder and runtime, so the
# virtual environment built in the builder runs unchanged in the runtime stage.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base-cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# No NVIDIA base image: `.[cuda]` installs jax[cuda12], whose wheels carry the CUDA runtime,
# cuBLAS, cuDNN, cuFFT, cuSPARSE, cuSOLVER, NCCL and ptxas. The one thing they lack is the
# driver (libcuda.so), which belongs to the host: the NVIDIA Container Toolkit mounts it when the
# container starts (`--gpus`, compose `deploy.resources`, or CDI `--device nvidia.com/gpu=all`).
# The two variables are what nvidia/cuda images set for the toolkit: without
# NVIDIA_DRIVER_CAPABILITIES, older toolkits mount only the `utility` libraries (nvidia-smi,
# NVML), not `compute` (libcuda), and JAX would find no GPU.
FROM base-cpu AS base-cuda
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

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
