#!/usr/bin/env bash
# `make run [UPSTREAM=hapi]`: a FHIR server (Medplum dev server, or HAPI FHIR JPA) with synthetic patients,
# and EMR Guard in front of it
# (embedded policy engine, SQLite store, signed audit checkpoints). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
FHIR_PORT="${FHIR_PORT:-8090}"
GATEWAY_LISTEN="${EMRGUARD_LISTEN:-127.0.0.1:8080}"
PATIENTS="${PATIENTS:-20}"
PY=.venv/bin/python
mkdir -p var

case "${UPSTREAM_KIND:-medplum}" in
  medplum)  # the Medplum dev server: starts in a second
    node devserver/fhir-server.mjs --port "$FHIR_PORT" > var/fhir-server.out 2> var/fhir-server.log &
    FHIR_PID=$!; WAIT=100 ;;
  hapi)  # HAPI FHIR JPA, the reference server (devserver/hapi): built once, starts in ~30 s
    scripts/hapi-run.sh --server.port="$FHIR_PORT" > var/fhir-server.out 2> var/fhir-server.log &
    FHIR_PID=$!; WAIT=1200 ;;
  *) echo "UPSTREAM must be medplum or hapi, not '${UPSTREAM_KIND}'" >&2; exit 2 ;;
esac
trap 'kill $FHIR_PID 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 "$WAIT"); do grep -q "ready on" var/fhir-server.out 2>/dev/null && break; sleep 0.1; done
grep -q "ready on" var/fhir-server.out || { echo "FHIR server did not start; see var/fhir-server.log" >&2; exit 1; }
UPSTREAM="$(grep -o 'http://[^ ]*' var/fhir-server.out | head -1)"
echo "Seeding ${PATIENTS} synthetic patients into ${UPSTREAM} ..."
$PY -m devtools.synthetic --base-url "$UPSTREAM" --count "$PATIENTS" > var/patients.txt
head -5 var/patients.txt

# The development key: tokens from `python -m devtools.tokens` verify against its public half.
$PY -m devtools.tokens --role physician > /dev/null
cat <<MSG

EMR Guard is starting on http://${GATEWAY_LISTEN}/fhir  (upstream ${UPSTREAM})
Try, in another shell:
  TOKEN=\$(.venv/bin/python -m devtools.tokens --role nurse --dept cardiology)
  curl -s -H "Authorization: Bearer \$TOKEN" -H "X-Purpose-Of-Use: TREAT" http://${GATEWAY_LISTEN}/fhir/Patient?_count=3
  TOKEN=\$(.venv/bin/python -m devtools.tokens --role researcher --sub res-001)
  curl -s -H "Authorization: Bearer \$TOKEN" -H "X-Purpose-Of-Use: HRESCH" http://${GATEWAY_LISTEN}/fhir/Condition?_count=3
Audit records: var/audit.jsonl and var/emrguard.sqlite (check them: .venv/bin/emrguard audit verify
  --db var/emrguard.sqlite --checkpoints var/audit-checkpoints.jsonl --public-key var/dev-keys/audit-signing.pem).
Patients: var/patients.txt

MSG
export EMRGUARD_LISTEN="$GATEWAY_LISTEN"
export EMRGUARD_UPSTREAM_URL="$UPSTREAM"
export EMRGUARD_JWT_PUBLIC_KEY_FILES="var/dev-keys/emrguard-dev.pem"
export EMRGUARD_ISSUER="https://idp.emrguard.local/dev"
export EMRGUARD_AUDIENCE="emrguard"
export EMRGUARD_POLICY_ENGINE="${EMRGUARD_POLICY_ENGINE:-embedded}"
export EMRGUARD_DB="${EMRGUARD_DB:-var/emrguard.sqlite}"
export EMRGUARD_AUDIT_LOG="${EMRGUARD_AUDIT_LOG:-var/audit.jsonl}"
# Research pseudonym key: made once per checkout for development; production keeps its own secret.
[[ -s var/dev-keys/pseudonym-secret ]] || $PY -c 'import secrets; print(secrets.token_urlsafe(32))' > var/dev-keys/pseudonym-secret
# The audit signing key (Ed25519; II.2 signed checkpoints and archive segments), made once per
# checkout the way production makes it: `emrguard serve` does not start without it.
[[ -s var/dev-keys/audit-signing.pem ]] || .venv/bin/emrguard keys init --dir var/dev-keys > /dev/null
export EMRGUARD_AUDIT_SIGNING_KEY_FILE="${EMRGUARD_AUDIT_SIGNING_KEY_FILE:-var/dev-keys/audit-signing.pem}"
export EMRGUARD_AUDIT_CHECKPOINT_FILE="${EMRGUARD_AUDIT_CHECKPOINT_FILE:-var/audit-checkpoints.jsonl}"
[[ -s var/dev-keys/watermark-secret ]] || $PY -c 'import secrets; print(secrets.token_urlsafe(32))' > var/dev-keys/watermark-secret
export EMRGUARD_WATERMARK_SECRET="${EMRGUARD_WATERMARK_SECRET:-$(cat var/dev-keys/watermark-secret)}"
export EMRGUARD_PSEUDONYM_SECRET="${EMRGUARD_PSEUDONYM_SECRET:-$(cat var/dev-keys/pseudonym-secret)}"
.venv/bin/emrguard serve
