# Thin image built with the same Makefile targets as a checkout: `make install`, `make index`, then serve.
# The build needs network access to the package index (pyproject pins torch==2.13.0; the CPU wheel is
# expected: point pip at the CPU wheel index through your pip configuration if your default index
# would resolve a CUDA build). torch is only used once, to export the model to ONNX during `make index`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 djqa

WORKDIR /app
COPY --chown=djqa:djqa . .
USER djqa

# Installs the venv, fetches and verifies models/m3e-small, exports ONNX and indexes seeds/.
RUN make install && make index

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/app/.venv/bin/python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=4).status != 200)"]
CMD ["/app/.venv/bin/dangjian-qa", "serve", "--host", "0.0.0.0"]
