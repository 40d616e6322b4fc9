# The worker: `userstore run` against the endpoint in AWS_ENDPOINT_URL (see docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The worker's dependencies first, exactly as locked: a code change does not reinstall them.
COPY requirements/worker.lock ./requirements/
RUN pip install -r requirements/worker.lock
# Then userstore itself with the `worker` extra (no moto: that is the `embedded` extra).
COPY pyproject.toml README.md ./
COPY events ./events
COPY worker ./worker
RUN pip install --no-deps ".[worker]" && pip check && rm -rf /src

RUN useradd --system --uid 10001 --no-create-home userstore
USER userstore
WORKDIR /

ENTRYPOINT ["userstore"]
CMD ["run"]
