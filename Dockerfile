# One image for every emp-pipeline service: the user-code gRPC server, the Dagster webserver and daemon,
# the run containers the Docker run launcher starts, the registry migration and the metrics exporter.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    EMP_HOME=/var/lib/emp \
    EMP_DATA_DIR=/var/lib/emp/data \
    DAGSTER_COMPUTE_LOG_DIR=/var/lib/dagster/compute_logs

WORKDIR /opt/dagster/app

# Dependencies first, from the packaging files only, so editing the code does not reinstall them; every
# version from constraints.txt, the set the tests passed with (make lock writes it).
COPY setup.py pyproject.toml constraints.txt ./
RUN mkdir emp_pipeline && touch emp_pipeline/__init__.py \
    && pip install -c constraints.txt ".[deploy]" \
    && pip uninstall --yes emp-pipeline \
    && rm -rf emp_pipeline build *.egg-info

COPY emp_pipeline ./emp_pipeline
RUN pip install --no-deps . && rm -rf build *.egg-info

# Production's instance and workspace (deploy/); the root dagster.yaml and workspace.yaml are the local ones.
COPY deploy/dagster.yaml ${DAGSTER_HOME}/dagster.yaml
COPY deploy/workspace.yaml /opt/dagster/app/workspace.yaml

# Services run as an unprivileged user; only the daemon runs as root (it talks to the Docker socket).
RUN useradd --system --uid 10001 --home-dir /var/lib/emp emp \
    && mkdir -p /var/lib/emp/data "${DAGSTER_COMPUTE_LOG_DIR}" \
    && chown -R emp:emp /var/lib/emp /var/lib/dagster ${DAGSTER_HOME}
USER emp

EXPOSE 4000 3000 9464
# Run containers and `docker compose run` get the code server by default; compose sets each service's command.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "emp_pipeline.definitions", \
     "--location-name", "emp_pipeline"]
