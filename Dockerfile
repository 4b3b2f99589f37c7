# The slmops worker image: a Python 3.11 image with the pinned toolchain of pyproject.toml (CPU-only torch), in a
# virtual environment at /opt/venv. docker-compose.yml runs it as the sweep and variant workers, the `deploy`
# one-shot and the checkpoint watcher.
#
#   docker compose build          # or: docker build -t slmops-worker:0.1.0 .
#   python -m ops.compose build   # with podman and no registry: FROM a Debian base made by debootstrap
#
# BASE_IMAGE: any Debian-based image with python3 (3.11) and its venv module; by default the official one.
# TORCH_INDEX: where the CPU wheel of torch comes from (PyPI's Linux wheel pulls CUDA, gigabytes this image never
# uses). A build that has the wheel in a folder mounts it and names it in PIP_FIND_LINKS instead, with
# TORCH_INDEX empty (python -m ops.compose build does that with the folders of this machine's pip config).
# PIP_CERT: a CA bundle mounted for the build, where the network to the package index needs one.
#
# No credential is baked in: no ENV or ARG holds one and only the folders below are copied (never .env). The
# containers get PREFECT_API_AUTH_STRING and MLFLOW_TRACKING_* from docker-compose.yml at run time.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_CERT=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    SLMOPS_REPO=/opt/slmops \
    SLMOPS_HOME=/data/slmops \
    PATH=/opt/venv/bin:$PATH

WORKDIR /opt/slmops

# Foundry Local's native library needs libatomic, which neither Debian's minbase nor the slim image has
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libatomic1 \
 && rm -rf /var/lib/apt/lists/*

# the dependencies first, in their own layer: a change of the code or the README does not reinstall torch
# (pyproject.toml names README.md as the package's readme: an empty one stands in for it)
COPY pyproject.toml ./
RUN python3 -m venv /opt/venv \
 && mkdir -p slmops flows tasks \
 && touch README.md slmops/__init__.py flows/__init__.py tasks/__init__.py \
 && pip install ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} . \
 && pip uninstall -y slmops

# only what runs: no .venv, caches or outputs of the build context
COPY slmops/ slmops/
COPY ops/ ops/
COPY flows/ flows/
COPY tasks/ tasks/
COPY configs/ configs/
COPY deployments/ deployments/
RUN pip install --no-deps -e . && mkdir -p /data/slmops /checkpoints

# a worker's own /health (prefect worker start --with-healthcheck)
EXPOSE 8080
CMD ["prefect", "worker", "start", "--pool", "slmops", "--type", "process", "--work-queue", "sweeps", "--with-healthcheck"]
