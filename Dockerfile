# vesper: the job queue service (`vesper serve`: HTTP API + workers), configured only by
# environment variables (README: DB_*, API_ADDR, WORKERS, VESPER_*, OTEL_*).
#
#   docker build -t vesper .
#   docker run -p 8080:8080 -e VESPER_APP=myproject.jobs:app vesper
#
# Your consumers: build FROM this image and COPY your package into /app (the working
# directory is importable), or install it into /opt/vesper with pip.

# -- build: the wheel and a virtual environment with vesper and its dependencies ----------
# (the distribution is vesper-hivemind: `vesper` on the package index is another project)
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/vesper \
 && /opt/vesper/bin/pip install /wheels/vesper_hivemind-*.whl

# -- run: the virtual environment only, as an unprivileged user ---------------------------
FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app --create-home vesper
COPY --from=build /opt/vesper /opt/vesper
ENV PATH=/opt/vesper/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    API_ADDR=:8080 \
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
