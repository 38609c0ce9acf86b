#!/usr/bin/env bash
# Builds hako's test repository of wasm binary packages with `hako pkg build`:
# CRAN sources of glue, magrittr, rlang, cli, vctrs, lifecycle, purrr,
# digest, Rcpp, future and furrr with their dependencies, and R's recommended
# packages (the .orig tarballs of Debian's r-cran-* source packages,
# sid's where the archive serves them, else trixie's, fetched through the
# toolchain's private apt configuration) and
# tests/wasm-pkgs/hakotest (C and C++: exceptions, setjmp/longjmp, an R error
# from C, fopen of a file the sandbox hides).
#
# Usage: tests/wasm-repo.sh [DIR]. Without DIR the repository is cached under
# <hako cache>/wasm-repo-<key>, the key hashing this script, the builder's
# sources, the test package and the toolchain's key, and rebuilt only when
# missing. Prints the
# repository's directory on its last line. Packages that fail to build are
# listed with the reason in DIR/FAILED; the script fails if a required one
# (REQUIRED below) is among them.
set -euo pipefail
cd "$(dirname "$0")/.."
HAKO=${HAKO:-$PWD/target/release/hako}
PACKAGES=(glue magrittr rlang cli digest Rcpp lifecycle vctrs purrr
  globals listenv parallelly future future.apply furrr
  MASS lattice Matrix survival cluster KernSmooth rpart class nnet spatial boot codetools foreign nlme)
# What must build. KernSmooth and nlme need Fortran (no wasm32 Fortran compiler
# comes from Debian); survival's source is not served by the archive here.
REQUIRED=(hakotest glue magrittr rlang cli digest Rcpp lifecycle vctrs purrr
  globals listenv parallelly future future.apply furrr
  MASS lattice Matrix cluster rpart class nnet spatial boot codetools foreign)

TC=$("$HAKO" pkg toolchain --print-dir)
CACHE=$(dirname "$TC")
key=$( { cat "$0" host/src/pkg/build.rs host/src/pkg/build/*; (cd tests/wasm-pkgs && find . -type f | LC_ALL=C sort | xargs sha256sum); basename "$TC"; } \
  | sha256sum | cut -c1-16)
DIR=${1:-$CACHE/wasm-repo-$key}
if [ -f "$DIR/.complete-$key" ]; then
  echo "wasm-repo: cached" >&2
  echo "$DIR"
  exit 0
fi
started=$(date +%s)
mkdir -p "$DIR/src/contrib"
SRC="$DIR/src/contrib"

# Sources: Debian's .orig tarball is the CRAN tarball.
nosrc=()
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for p in "${PACKAGES[@]}"; do
  if ls "$SRC/${p}_"*.tar.gz >/dev/null 2>&1; then continue; fi
  deb=r-cran-$(echo "$p" | tr '[:upper:]' '[:lower:]')
  # Only the .orig tarball, checked against the sha256 of the signed Sources
  # index (`apt-get source --download-only` also wants the Debian diff, which
  # the archive does not always serve). sid first (sources closest to R 4.6),
  # else trixie.
  orig=
  for suite in sid trixie; do
    read -r url file _ sum < <("$TC/bin/hako-apt-get" source --print-uris -qq "$deb/$suite" 2>/dev/null \
      | grep '\.orig\.tar\.' | head -n1) || continue
    url=${url//\'/}
    echo "wasm-repo: fetching the source of $p ($file, $suite)" >&2
    if curl -fsSL --retry 2 -o "$tmp/$file" "$url" 2>/dev/null; then
      echo "${sum#SHA256:}  $tmp/$file" | sha256sum -c --quiet
      orig="$tmp/$file"
      break
    fi
    echo "wasm-repo: $suite's $file is not served; trying the next suite" >&2
  done
  if [ -z "$orig" ]; then
    echo "wasm-repo: no source for $p" >&2
    nosrc+=("$p: no source tarball reachable (sid and trixie's .orig not served)")
    continue
  fi
  ver=$(basename "$orig" | sed -E "s/^${deb}_(.*)\.orig\.tar\..*$/\1/; s/\+dfsg.*$//")
  case "$orig" in
    *.tar.gz) cp "$orig" "$SRC/${p}_$ver.tar.gz" ;;
    *.tar.xz) xz -dc "$orig" | gzip -n > "$SRC/${p}_$ver.tar.gz" ;;
    *) echo "wasm-repo: unexpected $orig" >&2; exit 1 ;;
  esac
  rm -f "$tmp"/*
done
ver=$(sed -n 's/^Version: *//p' tests/wasm-pkgs/hakotest/DESCRIPTION)
tar -czf "$SRC/hakotest_$ver.tar.gz" -C tests/wasm-pkgs hakotest

# Build, dependencies first, going on past failures.
log="$DIR/build.log"
set +e
todo=()
for t in "$SRC"/*.tar.gz; do
  [ -e "$DIR/bin/emscripten/contrib/4.6/$(basename "$t" .tar.gz).tgz" ] || todo+=("$t")
done
"$HAKO" pkg build --keep-going --repo "$DIR" "${todo[@]}" 2>&1 | tee "$log" >&2
set -e
{ [ ${#nosrc[@]} -eq 0 ] || printf '%s\n' "${nosrc[@]}"
  sed -n 's/^hako pkg build: \([A-Za-z0-9.]*\) failed: /\1: /p' "$log"; } > "$DIR/FAILED"
if [ -s "$DIR/FAILED" ]; then
  echo "wasm-repo: these packages failed (see $log):" >&2
  cat "$DIR/FAILED" >&2
fi
missing=()
for p in "${REQUIRED[@]}"; do
  ls "$DIR/bin/emscripten/contrib/4.6/${p}_"*.tgz >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "wasm-repo: required packages not built: ${missing[*]}" >&2
  exit 1
fi
touch "$DIR/.complete-$key"
echo "wasm-repo: built in $(( $(date +%s) - started )) s" >&2
echo "$DIR"
