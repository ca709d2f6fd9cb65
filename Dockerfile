# One image for every WattsUp service: the `wattsup` command (stream worker, forecaster,
# dashboard, simulator, lag exporter). Kafka, the schema registry, Prometheus and Grafana run
# from their own official images (docker-compose.yml); no Java runtime is needed here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libgomp1: OpenMP runtime of scikit-learn's and Prophet's compiled parts.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, pinned by constraints.txt, so a source change does not reinstall them.
COPY pyproject.toml constraints.txt README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --constraint constraints.txt -r /tmp/requirements.txt

COPY foundation/ foundation/
COPY schemas/ schemas/
COPY readings/ readings/
COPY detection/ detection/
COPY simulation/ simulation/
COPY producers/ producers/
COPY forecaster/ forecaster/
COPY feedback/ feedback/
COPY models/ models/
COPY stream_processors/ stream_processors/
COPY dashboard/ dashboard/
COPY deploy/ deploy/
COPY wattsup/ wattsup/
RUN pip install --constraint constraints.txt --no-deps . \
    && useradd --create-home --uid 10001 wattsup \
    && mkdir -p /data/models /data/stream /data/forecaster /data/dashboard \
    && chown -R wattsup /data

# Services write state under /data (mount volumes there); every path is set by WATTSUP_* variables.
ENV WATTSUP_MODEL_DIR=/data/models \
    WATTSUP_STREAM_DATA_DIR=/data/stream \
    WATTSUP_FORECAST_DATA_DIR=/data/forecaster \
    WATTSUP_DASHBOARD_MODEL_DIR=/data/models \
    WATTSUP_DASHBOARD_DATABASE_URL=sqlite:////data/dashboard/wattsup.db

USER wattsup
WORKDIR /data
ENTRYPOINT ["wattsup"]
CMD ["--help"]
