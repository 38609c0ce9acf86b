#!/usr/bin/env bash
# The host half of `hako pkg build` for one package: configure and make,
# through the host's `R CMD INSTALL --libs-only` run in hako's stand-in R
# home (webR's Makeconf with emcc, R headers made for wasm32), so Makevars,
# configure scripts, CXX_STD and LinkingTo behave as under R.
# These run unsandboxed: only for sources the user trusts.
# In: TC (toolchain), PKGDIR (unpacked source), WORK (scratch), DEPS (library
# of the packages it links to), OUTLIB (where libs/ goes), JOBS.
set -euo pipefail
: "${TC:?}" "${PKGDIR:?}" "${WORK:?}" "${DEPS:?}" "${OUTLIB:?}"
name=$(basename "$PKGDIR")
src="$WORK/hostsrc/$name"
mkdir -p "$OUTLIB"
export PATH="$TC/bin:$TC/rhome/bin:$PATH"
export R_LIBS="$DEPS" R_LIBS_USER="$WORK/no-user-lib" R_LIBS_SITE="$WORK/no-site-lib"
export MAKEFLAGS="-j${JOBS:-2}"
# R 4.6's headers first; sources older than R 4.6 may still compile against
# 4.5's when what they call is still exported (checked at install).
for inc in "$TC/R/include" "$TC/R/include-4.5"; do
  rm -rf "$WORK/hostsrc" && mkdir -p "$WORK/hostsrc"
  cp -a "$PKGDIR" "$src"
  # The host's R checks `Depends: R (>= x)` against its own version, which
  # says nothing about R.wasm's; the R half (in the sandbox) checks it for real.
  perl -0pi -e 's/(?<![\w.])R[ \t\n]*\([^)]*\)[ \t]*,?//' "$src/DESCRIPTION"
  rm -f "$src/MD5"
  export HAKO_R_INCLUDE="$inc"
  if "$TC/rhome/bin/R" CMD INSTALL --libs-only --no-test-load --no-multiarch --no-staged-install \
    -l "$OUTLIB" "$src"; then
    exit 0
  fi
  [ "$inc" = "$TC/R/include" ] && echo "hako-build: retrying with R 4.5's headers" >&2
done
exit 1
