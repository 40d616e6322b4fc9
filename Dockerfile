# The worker: `userstore run` against the endpoint in AWS_ENDPOINT_URL (see docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The worker's dependencies first, exactly as locked, with the build backend: a layer of their
# own, rebuilt only when the lock changes.
COPY requirements/worker.lock ./requirements/
RUN pip install -r requirements/worker.lock "setuptools==80.9.0"
# Then userstore itself with the `worker` extra (no moto: that is the `embedded` extra). No
# dependency and no build isolation: a code change installs nothing but userstore, offline.
COPY pyproject.toml README.md LICENSE ./
COPY events ./events
COPY worker ./worker
RUN pip install --no-deps --no-build-isolation ".[worker]" && pip check && rm -rf /src

RUN useradd --system --uid 10001 --no-create-home userstore
USER userstore
WORKDIR /

ENTRYPOINT ["userstore"]
CMD ["run"]
