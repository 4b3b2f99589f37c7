# The slmops worker image: Prefect's published image with the pinned toolchain of pyproject.toml (CPU-only torch).
# docker-compose.yml runs it as the sweep and variant workers, the `deploy` one-shot and the checkpoint watcher.
#
#   docker compose build          # or: docker build -t slmops-worker:0.1.0 .
#
# No credential is baked in: no ENV or ARG holds one and only the folders below are copied (never .env). The
# containers get PREFECT_API_AUTH_STRING and MLFLOW_TRACKING_* from docker-compose.yml at run time.
FROM prefecthq/prefect:3.9.1-python3.11

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    SLMOPS_REPO=/opt/slmops \
    SLMOPS_HOME=/data/slmops

WORKDIR /opt/slmops

# the dependencies first, in their own layer: a code change does not reinstall torch. The CPU wheel of torch
# comes from PyTorch's index (PyPI's Linux wheel pulls CUDA, gigabytes this image never uses).
COPY pyproject.toml README.md ./
RUN mkdir -p slmops flows tasks \
 && touch slmops/__init__.py flows/__init__.py tasks/__init__.py \
 && pip install --extra-index-url https://download.pytorch.org/whl/cpu . \
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
