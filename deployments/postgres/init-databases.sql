-- Run once by the postgres image, on an empty data volume (docker-compose.yml mounts it into
-- /docker-entrypoint-initdb.d): one database for the Prefect server, one for the MLflow tracking server, one for
-- MLflow's basic-auth app (users, password hashes, permissions). ops.stack creates the same three (PREFECT_DB,
-- MLFLOW_DB, MLFLOW_AUTH_DB) for the stack of plain processes. A volume made before mlflow_auth was added needs
-- it by hand: docker compose exec postgres createdb -U "$POSTGRES_USER" mlflow_auth
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
