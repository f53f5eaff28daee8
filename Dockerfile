# vesper: the job queue service (`vesper serve`: HTTP API + workers), configured only by
# environment variables (README: DB_*, API_ADDR, WORKERS, VESPER_*, OTEL_*).
#
#   docker build -t vesper .
#   docker run -p 8080:8080 -e VESPER_APP=myproject.jobs:app vesper
#
# Without a package index (README "Container image"): put the wheels of vesper and its
# dependencies into the build context and name that directory, on a base of your own:
#
#   pip wheel -w wheels .
#   docker build --build-arg WHEELS=wheels --build-arg BASE_IMAGE=my/python:3.11 -t vesper .
#
# Your consumers: build FROM this image and COPY your package into /app (the working
# directory is importable), or install it into /opt/vesper with pip.

# Any image with python (3.11 or later) and its venv module, in both stages: the virtual
# environment made in the first runs on the second's interpreter.
ARG BASE_IMAGE=python:3.11-slim

# -- build: a virtual environment with vesper and its dependencies ------------------------
# (the distribution is vesper-hivemind: `vesper` on the package index is another project)
FROM ${BASE_IMAGE} AS build
# WHEELS: a directory of the build context holding the wheels of vesper-hivemind and all
# its dependencies; then nothing is fetched. Empty: the wheels are built from src/ with
# the package index.
ARG WHEELS=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# .dockerignore lets in pyproject.toml, README.md, src/ and wheels/ only
COPY . ./
# the venv's own pip throughout: a base's python may have none (Debian's has venv only)
RUN set -eu; \
    python -m venv /opt/vesper; \
    if [ -n "$WHEELS" ]; then \
        if ! ls "$WHEELS"/vesper_hivemind-*.whl >/dev/null 2>&1; then \
            echo "WHEELS=$WHEELS: no vesper_hivemind wheel in that directory of the build context (make it with: pip wheel -w $WHEELS .)" >&2; \
            exit 1; \
        fi; \
        mkdir /wheels && cp "$WHEELS"/*.whl /wheels/; \
    else \
        /opt/vesper/bin/pip wheel --wheel-dir /wheels .; \
    fi; \
    /opt/vesper/bin/pip install --no-index --find-links /wheels vesper-hivemind

# -- run: the virtual environment only, as an unprivileged user ---------------------------
FROM ${BASE_IMAGE}
# /var/lib/vesper: the SQLite file when DB_HOST is unset (mount a volume there to keep it)
RUN useradd --system --uid 10001 --home-dir /app --create-home vesper \
 && mkdir -p /var/lib/vesper && chown vesper: /var/lib/vesper
COPY --from=build /opt/vesper /opt/vesper
ENV PATH=/opt/vesper/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    API_ADDR=:8080 \
    DB_PATH=/var/lib/vesper/vesper.db \
    VESPER_LOG_FORMAT=json
WORKDIR /app
USER vesper
EXPOSE 8080
# /health answers while the process runs; /ready also checks the store
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('API_ADDR', ':8080').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2)"]
# SIGTERM: stop claiming, let running jobs finish within VESPER_SHUTDOWN_GRACE, exit 0
STOPSIGNAL SIGTERM
CMD ["vesper", "serve"]
