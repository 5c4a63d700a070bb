#!/bin/sh
# Runs once, when the PostgreSQL volume is first initialised: the registry gets its own database next to
# Dagster's, owned by the same user (POSTGRES_USER / POSTGRES_DB come from .env through docker-compose).
set -eu
psql --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -v ON_ERROR_STOP=1 \
  -c "CREATE DATABASE \"$EMP_REGISTRY_DB\" OWNER \"$POSTGRES_USER\""
