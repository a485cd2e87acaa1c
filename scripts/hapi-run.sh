#!/usr/bin/env bash
# Run the HAPI FHIR test upstream (building it first if needed) in the foreground:
#   scripts/hapi-run.sh --server.port=8091        # --server.port=0 picks a free port
# stdout gets one line, "HAPI FHIR ready on http://127.0.0.1:PORT/fhir", once it serves
# (after ~30 s); warnings go to stderr. Extra JVM options: HAPI_JAVA_OPTS.
set -euo pipefail
JAR="$("$(dirname "$0")/ensure-hapi.sh")"
# shellcheck disable=SC2086
exec java ${HAPI_JAVA_OPTS:--Xmx512m -XX:+UseSerialGC} -jar "$JAR" "$@"
