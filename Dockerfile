# The worker: `userstore run` against the endpoint in AWS_ENDPOINT_URL (see docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY events ./events
COPY worker ./worker
# The runtime dependencies only (no moto: that is the `embedded` extra).
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --no-create-home userstore
USER userstore
WORKDIR /

ENTRYPOINT ["userstore"]
CMD ["run"]
