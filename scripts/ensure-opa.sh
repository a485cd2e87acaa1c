#!/usr/bin/env bash
# Print the path of the OPA binary, building it from the Go module proxy when the cache lacks it.
# The cache lives outside the repo, keyed by version, so CI and every clone reuse one build.
set -euo pipefail
OPA_VERSION="${OPA_VERSION:-v1.22.3}"
CACHE_DIR="${EMRGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/emrguard}/opa-${OPA_VERSION}"
if [[ ! -x "$CACHE_DIR/opa" ]]; then
  command -v go >/dev/null || { echo "ensure-opa: Go is needed to build OPA ${OPA_VERSION}" >&2; exit 1; }
  echo "ensure-opa: building OPA ${OPA_VERSION} into $CACHE_DIR (once; takes a few minutes)" >&2
  mkdir -p "$CACHE_DIR"
  GOBIN="$CACHE_DIR.tmp" GOFLAGS=-mod=mod go install "github.com/open-policy-agent/opa@${OPA_VERSION}" >&2
  mv "$CACHE_DIR.tmp/opa" "$CACHE_DIR/opa" && rmdir "$CACHE_DIR.tmp"
fi
"$CACHE_DIR/opa" version >/dev/null
echo "$CACHE_DIR/opa"
