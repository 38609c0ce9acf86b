#!/usr/bin/env bash
# Every test of hako, from a fresh clone on a fresh machine: set-up, lint,
# the Rust unit and end-to-end tests (real webR, real wasmtime, real R).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== build (release)"
cargo build --release --workspace --all-targets

echo "== webR assets"
cargo run --release -q -p hako -- assets fetch

echo "== wasm test repository (hako pkg build; cached under a key)"
HAKO_TEST_WASM_REPO=$(bash tests/wasm-repo.sh)
export HAKO_TEST_WASM_REPO

echo "== cargo clippy"
cargo clippy --release --workspace --all-targets -q -- -D warnings

echo "== cargo test"
cargo test --release --workspace -- --test-threads=2

echo "== R package: R CMD check against the real binary"
bash r-package/run-tests.sh
