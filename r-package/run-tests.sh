#!/usr/bin/env bash
# Builds, installs and checks the R package hako against the real hako
# binary of this repository. Usage: bash r-package/run-tests.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
export HAKO_BINARY="${HAKO_BINARY:-$repo/target/release/hako}"
if [ ! -x "$HAKO_BINARY" ]; then
  (cd "$repo" && cargo build --release -p hako)
fi
# The test repository of wasm packages (test-packages.R installs from it):
# tests/run.sh exports it; otherwise build it (cached under a key, so only
# the first run on a machine takes minutes).
if [ -z "${HAKO_TEST_WASM_REPO:-}" ]; then
  HAKO_TEST_WASM_REPO="$(HAKO="$HAKO_BINARY" bash "$repo/tests/wasm-repo.sh" | tail -n1)"
fi
export HAKO_TEST_WASM_REPO
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export R_LIBS="$work/lib${R_LIBS:+:$R_LIBS}"
mkdir -p "$work/lib"
cd "$work"
R CMD build --no-manual "$here"
tarball="$(ls hako_*.tar.gz)"
R CMD INSTALL -l "$work/lib" "$tarball"
export _R_CHECK_FORCE_SUGGESTS_=false
R CMD check --no-manual "$tarball" || { cat hako.Rcheck/00check.log; cat hako.Rcheck/tests/testthat.Rout.fail 2>/dev/null || true; exit 1; }
log=hako.Rcheck/00check.log
cat hako.Rcheck/tests/testthat.Rout | tail -25
if grep -Eq '^Status: .*(ERROR|WARNING)' "$log"; then
  echo "R CMD check: errors or warnings" >&2
  exit 1
fi
grep '^Status:' "$log"
