# Images for docker-compose.yaml: the official Airflow image plus the project's pinned requirements and
# the commerce_sync package (target `product`, the default: every Airflow service), and the same plus
# the developer distribution dev/ (target `sandbox`: only the sandbox service, never an Airflow one).
#
# Build:  docker compose build        (or: docker build -t commerce-sync-airflow .
#                                          docker build --target sandbox -t commerce-sync-sandbox .)
#
# Follows the documented way of extending the official image
# (https://airflow.apache.org/docs/docker-stack/build.html): install as the `airflow` user and pin
# apache-airflow to the image's own version (${AIRFLOW_VERSION} is set by the base image), so the
# requirements can never silently up- or downgrade Airflow itself.
FROM apache/airflow:3.3.2-python3.11 AS runtime

USER airflow
WORKDIR /opt/airflow

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY --chown=airflow:0 requirements.txt /opt/airflow/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/airflow/requirements.txt

# The package. Editable install from /opt/airflow/include: docker-compose.yaml bind-mounts ./include
# over this same path, so containers run the working-tree code (no rebuild after a code change),
# and without the bind mount the copy baked into the image is used. --no-deps: every dependency is
# already pinned by requirements.txt above.
COPY --chown=airflow:0 pyproject.toml README.md /opt/airflow/
COPY --chown=airflow:0 include/ /opt/airflow/include/
RUN pip install --no-cache-dir --no-deps -e /opt/airflow \
    && python -c "import commerce_sync"

ENV COMMERCE_SYNC_CONFIG_DIR=/opt/airflow/include/config \
    COMMERCE_SYNC_DATA_DIR=/opt/airflow/data

# The sandbox (supplier feeds, SFTP server, marketplace simulators) for the compose service `sandbox`:
# the runtime plus dev/, installed editable the same way (./dev is bind-mounted over it).
FROM runtime AS sandbox
COPY --chown=airflow:0 dev/ /opt/airflow/dev/
RUN pip install --no-cache-dir --no-deps -e /opt/airflow/dev \
    && python -c "import commerce_sync_sandbox, commerce_sync_devtools"

# The production image, the default target (last): the runtime alone, with no sandbox or devtools module.
FROM runtime AS product
RUN python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('commerce_sync_sandbox', 'commerce_sync_devtools')))"
