#!/usr/bin/env bash
# One-time set-up of a fresh Debian machine for hako: the tools the build and
# the tests need. Idempotent; installs only what is missing.
set -euo pipefail

need_apt=()
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
command -v Rscript >/dev/null 2>&1 || need_apt+=(r-base-core)
# What the R package's tests and vignette use, from Debian (CRAN is not reachable).
for p in r-cran-testthat r-cran-future r-cran-future.apply r-cran-furrr r-cran-foreach r-cran-doparallel \
         r-cran-promises r-cran-later r-cran-cli r-cran-knitr r-cran-rmarkdown pandoc; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
# hako pkg build's compilers (its toolchain adds emcc privately, see `hako pkg toolchain`).
for p in clang-19 lld-19 llvm-19 curl xz-utils perl; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
# Real engines the launcher and status-page tests start on loopback (and stop).
for p in openssh-server openssh-client slurmctld slurmd slurm-client munge chromium; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo (Rust) is required" >&2; exit 1; }
echo "setup: node $(node --version), npm $(npm --version 2>/dev/null), $(Rscript --version 2>&1 | head -n1), $(cargo --version)"
