#' hako: sandboxed parallel R tasks
#'
#' hako runs R tasks in WebAssembly sandboxes (webR's R 4.6 under wasmtime)
#' driven by the `hako` binary. Its API follows mirai: [daemons()] sets up
#' sandboxed daemons, [hako()] evaluates an expression asynchronously,
#' [hako_map()] maps a function over a vector, list or data frame rows, and
#' [hako_multisession] / [hako_cluster] make it a \pkg{future} backend.
#'
#' Every task runs in a pristine sandbox: it sees no host files but those
#' mounted, has no network and no processes, and has only the packages of
#' webR's base R set (base, stats, utils, methods, graphics, grDevices,
#' datasets, tools, compiler, splines, stats4, parallel, grid).
#'
#' Units, one rule as in mirai: every duration given from R is in
#' milliseconds (`.timeout`, `daemons(timeout = )`, `idletime`, `walltime`,
#' `daemon(timeout = )`, and the host options `shutdown_grace`, `heartbeat`,
#' `handshake_timeout`); sizes are in MiB (`memory`, `max_payload`). mirai's
#' arguments are accepted under mirai's names with mirai's meaning, or
#' refused with an R error that names hako's equivalent (see the README's
#' "mirai -> hako" table).
#'
#' @keywords internal
#' @name hako-package
#' @aliases hako-package
"_PACKAGE"

# Package state: one environment per compute profile in .hako$profiles.
.hako <- new.env(parent = emptyenv())
.hako$profiles <- new.env(parent = emptyenv())
.hako$default <- "default"

#' Packages available inside the sandbox
#'
#' The packages webR's R in the hako sandbox has. R-only packages installed
#' in this session can be added with `daemons(packages = )`; a task needing
#' any other fails with an error naming it (packages with compiled code
#' cannot run in the WebAssembly sandbox).
#' @return A character vector.
#' @examples
#' sandbox_packages()
#' @export
sandbox_packages <- function() {
  c("base", "stats", "utils", "methods", "graphics", "grDevices", "datasets",
    "tools", "compiler", "splines", "stats4", "parallel", "grid")
}

# as.promise.hako is registered for promises::as.promise by a delayed
# S3method() in NAMESPACE: it takes effect if and when promises is loaded.

.onUnload <- function(libpath) {
  for (p in ls(.hako$profiles, all.names = TRUE)) try(reset_profile(p), silent = TRUE)
}

#' Locate the hako binary
#'
#' Looks, in order, at the option `hako.binary`, the environment variable
#' `HAKO_BINARY` and the `PATH`.
#'
#' @return The path of the `hako` executable; an error saying how to get it
#'   when none is found.
#' @examples
#' \dontrun{
#' hako_binary()
#' }
#' @export
hako_binary <- function() {
  cand <- getOption("hako.binary")
  src <- "option 'hako.binary'"
  if (is.null(cand) || !nzchar(cand)) {
    cand <- Sys.getenv("HAKO_BINARY")
    src <- "environment variable HAKO_BINARY"
  }
  if (!nzchar(cand)) {
    cand <- Sys.which("hako")[[1L]]
    src <- "PATH"
  }
  if (!nzchar(cand) || !file.exists(cand) || dir.exists(cand)) {
    where <- if (nzchar(cand)) sprintf(" (%s points to '%s', which does not exist)", src, cand) else ""
    stop(paste0(
      "the 'hako' binary was not found", where, ".\n",
      "Build it in the hako repository with `cargo build --release -p hako` ",
      "(binary: target/release/hako) or install it with `cargo install --path host`, then either ",
      "put it on the PATH, set the environment variable HAKO_BINARY=/path/to/hako, ",
      "or set options(hako.binary = \"/path/to/hako\")."
    ), call. = FALSE)
  }
  normalizePath(cand)
}

.onLoad <- function(libname, pkgname) {
  # parallel's node generics (sendData, recvData, recvOneData) are not
  # exported, so make_cluster()'s methods are registered here.
  register_parallel_methods()
  invisible()
}
