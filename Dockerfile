# One image for the whole project, chosen by command/args:
#   training Job    python -m training
#   predictor       python -m serving --http_port 8080 --grpc_port 8081
#   tracking server mlflow server ...
#   prediction log  python -m predictionlog
# It runs as the non-root user 10001 on a read-only root file system; every process writes
# only to /tmp (an emptyDir in the chart).
#
# The base is pinned by tag; for a byte-for-byte reproducible build pin its digest too:
#   make images BASE_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
WORKDIR /src
# Dependencies in a layer of their own: they change far less often than the code. The list
# comes from pyproject.toml itself (runtime dependencies plus the `server` extra that MLflow
# needs for PostgreSQL, S3 and its metrics), so it cannot drift from it.
COPY pyproject.toml ./
# pip's own configuration (index, CA bundle) may come in as the build secret `pipconf`;
# it is mounted for the one command and never stored in a layer.
RUN --mount=type=secret,id=pipconf,target=/etc/pip.conf \
    python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['server']))" > /tmp/requirements.txt \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt
COPY README.md ./
COPY contract ./contract
COPY training ./training
COPY serving ./serving
COPY rollout ./rollout
COPY predictionlog ./predictionlog
RUN --mount=type=secret,id=pipconf,target=/etc/pip.conf \
    /opt/venv/bin/pip install --no-deps . \
 && /opt/venv/bin/pip check

FROM ${BASE_IMAGE}
# pip compiled every module at install time; nothing is written at run time.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
RUN groupadd --gid 10001 mlops \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin mlops
COPY --from=build /opt/venv /opt/venv
# The `helm test` pod's V2 request (the same script `make smoke` runs), standard library only.
COPY scripts/v2_request.py /opt/mlops/v2_request.py
# Numeric, so kubelet can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
EXPOSE 5000 8080 8081 8082
CMD ["python", "-m", "serving"]
