# syntax=docker/dockerfile:1
# One image, one target per service: docker build --target gateway -t tunescout-gateway .
# The base is pinned by digest (python:3.11-slim-bookworm); refresh it with
#   docker buildx imagetools inspect python:3.11-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS source
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tunescout ./tunescout
COPY services ./services

# each service's venv holds only what it needs: the gateway has no numba, scipy or ffmpeg
FROM source AS build-backend
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir ".[engine,stores]"

FROM source AS build-gateway
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir ".[gateway]"

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    TUNESCOUT_HOST=0.0.0.0 \
    TUNESCOUT_CONFIG=/app/config.json \
    TUNESCOUT_DATA_DIR=/data \
    TUNESCOUT_LOG_FORMAT=json
RUN groupadd --system --gid 10001 tunescout \
    && useradd --system --uid 10001 --gid tunescout --home-dir /app --no-create-home tunescout \
    && mkdir -p /app /data /tmp/numba-cache \
    && chown tunescout:tunescout /data /tmp/numba-cache
WORKDIR /app
USER 10001:10001
VOLUME ["/data"]

FROM runtime AS fingerprinter
COPY --from=build-backend /opt/venv /opt/venv
ENV TUNESCOUT_PORT=50051 TUNESCOUT_METRICS_PORT=9090
EXPOSE 50051 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "tunescout.common.healthcheck", "50051"]
CMD ["python", "-m", "services.fingerprinter"]

FROM runtime AS matcher
COPY --from=build-backend /opt/venv /opt/venv
ENV TUNESCOUT_PORT=50052 TUNESCOUT_METRICS_PORT=9090
EXPOSE 50052 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "tunescout.common.healthcheck", "50052"]
CMD ["python", "-m", "services.matcher"]

FROM runtime AS results
COPY --from=build-backend /opt/venv /opt/venv
ENV TUNESCOUT_PORT=50053 TUNESCOUT_METRICS_PORT=9090
EXPOSE 50053 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "tunescout.common.healthcheck", "50053"]
CMD ["python", "-m", "services.results"]

FROM runtime AS gateway
COPY --from=build-gateway /opt/venv /opt/venv
ENV TUNESCOUT_PORT=8000 TUNESCOUT_METRICS_PORT=9090
EXPOSE 8000 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=4).status == 200 else 1)"]
CMD ["python", "-m", "services.gateway"]
