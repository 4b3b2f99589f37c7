-- Run once by the postgres image, on an empty data volume (docker-compose.yml mounts it into
-- /docker-entrypoint-initdb.d): one database for the Prefect server, one for the MLflow tracking server.
-- slmops.stack creates the same two (PREFECT_DB, MLFLOW_DB) for the stack of plain processes.
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
