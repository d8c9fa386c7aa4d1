# concierge: one process, supervised inside; the container runtime restarts it if the root gives up.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY concierge ./concierge
COPY actors ./actors
COPY supervisors ./supervisors
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --create-home --home-dir /app concierge
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY --chown=concierge:concierge config ./config
USER concierge
ENV CONCIERGE_HTTP_HOST=0.0.0.0 \
    CONCIERGE_HTTP_PORT=8000 \
    CONCIERGE_DATA_DIR=/app/var \
    CONCIERGE_CONFIG_DIR=/app/config \
    CONCIERGE_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2).status == 200 else 1)"
CMD ["concierge", "run"]
