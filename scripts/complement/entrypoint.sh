#!/bin/sh
# Complement passes the server name as SERVER_NAME; the server reads HS_SERVER_NAME. exec keeps the
# server as PID 1 so that it receives SIGTERM from "docker stop" and shuts down cleanly.
# Complement may run this entrypoint several times in the same container: the data under
# HS_DATA_DIR is reused, and the federation certificate is issued afresh at every start.
set -e
export HS_SERVER_NAME="${SERVER_NAME:-${HS_SERVER_NAME:-localhost}}"
mkdir -p "${HS_DATA_DIR:-/data}"
exec /homeserver run "$@"
