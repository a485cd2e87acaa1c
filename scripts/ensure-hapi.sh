#!/usr/bin/env bash
# Print the path of the HAPI FHIR test upstream's jar (devserver/hapi), building it with Maven
# when the cache lacks it. The cache lives outside the repo, keyed by a hash of the app's
# sources, so CI and every clone reuse one build; the build runs in a temporary copy, so no
# target/ is left in the repo. Build output goes to stderr; stdout gets only the jar's path.
set -euo pipefail
SRC_DIR="$(cd "$(dirname "$0")/../devserver/hapi" && pwd)"
KEY="$(cd "$SRC_DIR" && find pom.xml src -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
CACHE_DIR="${EMRGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/emrguard}/hapi-${KEY}"
if [[ ! -s "$CACHE_DIR/hapi.jar" ]]; then
  for tool in java mvn; do
    command -v "$tool" >/dev/null || { echo "ensure-hapi: $tool is needed to build devserver/hapi (Java 17+, Maven 3.8+)" >&2; exit 1; }
  done
  echo "ensure-hapi: building devserver/hapi into $CACHE_DIR (once; ~20 s, ~340 MB from Maven Central the first time)" >&2
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/emrguard-hapi-build.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
  cp -R "$SRC_DIR/pom.xml" "$SRC_DIR/src" "$WORK/"
  (cd "$WORK" && mvn -q -B package -DskipTests) >&2
  mkdir -p "$CACHE_DIR"
  cp "$WORK/target/hapi.jar" "$CACHE_DIR/hapi.jar.tmp.$$"
  mv -f "$CACHE_DIR/hapi.jar.tmp.$$" "$CACHE_DIR/hapi.jar"
  # Each jar is ~300 MB: drop builds of older sources, unless made within the last hour
  # (another checkout may be using one right now).
  find "$(dirname "$CACHE_DIR")" -mindepth 1 -maxdepth 1 -type d -name 'hapi-*' ! -name "hapi-${KEY}" -mmin +60 \
    -exec rm -rf {} + 2>/dev/null || true
fi
echo "$CACHE_DIR/hapi.jar"
