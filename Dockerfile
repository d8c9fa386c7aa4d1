# concierge: one process, supervised inside; the container runtime restarts it if the root gives up.
# Base images are pinned to an exact version: move them on purpose, after a test run.

# -- build: the locked dependencies (hashes checked) and the project's wheel ----------------
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY requirements/uv.txt requirements/uv.txt
RUN pip install --require-hashes --no-deps -r requirements/uv.txt
COPY pyproject.toml uv.lock README.md ./
# Exactly what uv.lock pins, each file checked against its hash; then the build backend.
RUN uv export --frozen --no-dev --no-emit-project --format requirements-txt -o /tmp/runtime.txt \
 && uv export --frozen --only-group build --no-emit-project --format requirements-txt -o /tmp/build.txt \
 && python -m venv /venv \
 && /venv/bin/pip install --require-hashes --no-deps -r /tmp/runtime.txt \
 && pip install --require-hashes --no-deps -r /tmp/build.txt
COPY concierge ./concierge
COPY actors ./actors
COPY supervisors ./supervisors
# The project itself, without dependencies: they are the locked ones above.
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /venv/bin/pip install --no-deps /wheels/*.whl

# -- runtime: the venv only, as an unprivileged user -----------------------------------------
FROM python:3.11.14-slim-bookworm
RUN useradd --system --uid 10001 --create-home --home-dir /app concierge
COPY --from=build /venv /venv
WORKDIR /app
USER 10001
# The default knowledge, prompts and triage rules ship inside the package; mount a copy
# (`concierge init DIR`) and set CONCIERGE_CONFIG_DIR to adapt them.
ENV PATH=/venv/bin:$PATH \
    CONCIERGE_HTTP_HOST=0.0.0.0 \
    CONCIERGE_HTTP_PORT=8000 \
    CONCIERGE_DATA_DIR=/app/var \
    CONCIERGE_LOG_FORMAT=json \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2).status == 200 else 1)"]
CMD ["concierge", "run"]
