# The TinyMetaFed aggregation service: slim, non-root, dependencies pinned, with a health check.
#   docker build -t tinymetafed .    (deploy/docker-compose.yml builds and runs it)
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TINYMETAFED_STATE_DIR=/var/lib/tinymetafed

WORKDIR /app
COPY deploy/requirements.lock /app/requirements.lock
RUN pip install --no-deps --requirement /app/requirements.lock
COPY pyproject.toml README.md /app/
COPY broker_service /app/broker_service
COPY device_agent /app/device_agent
COPY deploy/board /app/deploy/board
COPY deploy/service-entrypoint.sh /usr/local/bin/tinymetafed-entrypoint
RUN pip install --no-deps /app \
    && useradd --system --uid 10001 --home-dir /var/lib/tinymetafed --create-home tinymetafed

USER 10001
VOLUME ["/var/lib/tinymetafed"]
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["tinymetafed", "health", "--state-dir", "/var/lib/tinymetafed", "--max-age", "120"]
# secrets may come as files: TINYMETAFED_PASSWORD_FILE, TINYMETAFED_INFLUX_TOKEN_FILE
ENTRYPOINT ["tinymetafed-entrypoint"]
CMD ["serve"]
