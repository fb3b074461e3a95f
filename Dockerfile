# mlrec-luigi as a container job: runs the whole DAG once and exits with Luigi's exit code.
#   docker build -t mlrec-luigi .
#   docker run --rm --env-file .env mlrec-luigi                       (local scheduler)
#   docker run --rm --env-file .env mlrec-luigi --scheduler-host luigid
# Not built or run on the development machines (no Docker engine there).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY setup.cfg pyproject.toml README.md luigi.cfg ./
COPY mlrec_luigi ./mlrec_luigi
RUN pip install .
COPY config ./config
ENTRYPOINT ["luigi", "--module", "mlrec_luigi", "DailyRun"]
CMD ["--local-scheduler"]
