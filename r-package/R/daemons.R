#' Set up sandboxed daemons
#'
#' Sets the daemons of a compute profile: a private `hako host` child
#' process with `n` local sandboxed daemons; or a host that also listens for
#' remote daemons at `url`; or a link to a shared remote host (when `token`
#' is given). `daemons(0)` resets the profile: its host shuts down and
#' unresolved tasks resolve to errorValue 19.
#'
#' The host serves one R session, over a token-guarded loopback socket, and
#' exits with it: when the session ends, however it ends (`q()` without
#' `daemons(0)`, a crash, `kill -9`), the host sees its link close, shuts
#' down and lets its daemons go. The host and the daemons of
#' [launch_local()] run in a session of their own, so the terminal's signals
#' (Ctrl-C in this R session) interrupt R, never them, and they hold none of
#' this session's sockets. Daemons dial out to a listening host over TLS WebSockets
#' (`wss://`), pinning its certificate's fingerprint and presenting its join
#' token; [launch_local()] and [launch_remote()] give or run the commands.
#'
#' @param n Number of local sandboxed daemons (in the host process). `0`
#'   resets. With `url`, local daemons in addition to the remote ones
#'   (default 0).
#' @param url `NULL` for local daemons only; a `wss://HOST:PORT` URL (see
#'   [host_url()]) to listen for remote daemons; or, with `token`, the URL of
#'   a remote host to join as a client.
#' @param remote `NULL`, or with `url` a launch configuration made by
#'   [ssh_config()] or [cluster_config()]: as in mirai, `n` daemons are
#'   launched through it ([launch_remote()]) instead of `n` local ones.
#' @param dispatcher `TRUE` only: hako's host always queues tasks first in,
#'   first out, as mirai's dispatcher does; `FALSE` is an R error.
#' @param ... mirai's [daemon()] arguments: `cleanup = FALSE` keeps state
#'   between tasks (as `keep_state = TRUE`); with `url`, `idletime`,
#'   `walltime` (milliseconds), `maxtasks`, `autoexit`, `tlscert` are kept
#'   for [launch_local()] and [launch_remote()]; for local daemons (no `url`)
#'   these caps are an R error (local daemons live in the host's process).
#'   Also `hako host` options, durations in milliseconds: `retries`,
#'   `shutdown_grace`, `heartbeat`, `handshake_timeout`, `max_everywhere`
#'   (MiB of everywhere() code kept), `max_unread` (MiB of results held
#'   unread before new tasks are refused), `max_queued`, `max_output`,
#'   `identity`, `cert`, `key`, `advertise`, `no_clients`. Any other name is
#'   an R error naming it. A refusal by the host resolves the task to a
#'   'hakoError' with the host's reason (class "hakoRejected" in
#'   `$condition.class`).
#' @param sync `FALSE` only: tasks always run in a sandbox, never in this
#'   session; `TRUE` is an R error.
#' @param serial,pass Not supported (an R error): external pointers cannot
#'   enter a sandbox; keys must be unencrypted.
#' @param tls With `url`: the host's certificate as in mirai, a PEM file
#'   holding the certificate (chain) and its private key, or
#'   `c(certificate, key)` as PEM text. `NULL`: a fresh self-signed
#'   certificate whose fingerprint daemons pin.
#' @param token,fingerprint To join a remote host: its client token and its
#'   certificate fingerprint (`SHA256:...`), as printed by that host.
#' @param seed `NULL` or an integer: the seed of the L'Ecuyer-CMRG streams,
#'   one per task in submission order, so that results are reproducible
#'   whichever daemon runs which task.
#' @param memory Memory cap of each local sandbox in MiB (default 1024).
#'   Unlike mirai's `memory` (a bound on queued tasks, which is hako's
#'   `max_queued` host option).
#' @param timeout Default timeout of each task in milliseconds (`NULL`: none).
#' @param mount Host directories to expose in local sandboxes, as
#'   `c("/host/dir" = "/guest/dir:ro")` (`:rw` to let tasks write there).
#'   Nothing else of the host's filesystem is visible; remote daemons choose
#'   their own mounts (see [daemon()]).
#' @param packages Packages the local sandboxes get, with the packages they
#'   depend on (e.g. `c("purrr", "data.table")`). A name installed in hako's
#'   package store (WebAssembly builds, compiled code included: see `repos`,
#'   or `hako pkg install NAME --repo URL` in a shell) comes from there,
#'   checked by hash and mounted read-only at `/hako/library`; else an R-only
#'   package installed in this session's library is mounted read-only at
#'   `/library/<name>` (local daemons only). Anything else is an R error
#'   saying how to add it. Remote daemons fetch the store's packages from
#'   the host (checked by hash). Local daemons load the set's namespaces
#'   once (as [everywhere()]), so tasks do not pay for loading them;
#'   `library()` in a task attaches, and the reset undoes it.
#' @param repos `NULL`, or repositories of WebAssembly binary packages
#'   (`https://` or `file://` URLs, or directories, in the layout of webR's
#'   repository <https://repo.r-wasm.org> or one `hako pkg build` writes):
#'   the names of `packages` hako's store lacks and these offer are installed
#'   into the store first (`hako pkg install NAME... --repo URL...`, its
#'   progress shown here), with their dependencies. Default
#'   `getOption("hako.repos")`.
#' @param max_payload Largest task or result, in MiB (default 256).
#' @param keep_state Keep state between tasks on local daemons (no reset);
#'   mirai's `cleanup = FALSE`.
#' @param output Relay the tasks' output (stdout, messages, warnings) in
#'   this session.
#' @param replicas `NULL` or a whole number from 1 to 5: the default
#'   `.replicas` of this profile's tasks (see [hako()]), each run on that
#'   many distinct daemons that must return the same result. A host this
#'   session starts also takes it as its default (`hako host --replicas`),
#'   for its remote clients too. Local daemons: `n` must be at least this.
#' @param .compute Compute profile name (`NULL`: the default one).
#' @return Invisibly, a 'hakoDaemons' object (printed, it shows the launch
#'   command of a listening host) that `with()` accepts; `daemons()` with no
#'   arguments returns [status()].
#' @examples
#' \dontrun{
#' daemons(2, seed = 1)
#' hako_map(1:4, function(i) runif(1))[.flat]
#' daemons(0)
#' with(daemons(1), hako(1 + 1)[])
#' d <- daemons(url = host_url(), .compute = "remote")
#' d$daemon_command
#' daemons(0, .compute = "remote")
#' }
#' @export
daemons <- function(n, url = NULL, remote = NULL, dispatcher = TRUE, ..., sync = FALSE, seed = NULL,
                    memory = NULL, serial = NULL, tls = NULL, pass = NULL, token = NULL, fingerprint = NULL,
                    timeout = NULL, mount = NULL, packages = NULL, repos = getOption("hako.repos"), max_payload = NULL,
                    keep_state = FALSE, output = TRUE, replicas = NULL, .compute = NULL) {
  .compute <- compute_name(.compute)
  check_daemons_args(remote, dispatcher, sync, serial, pass)
  replicas <- check_replicas(replicas, "replicas")
  if (!is.null(remote) && (is.null(url) || !is.null(token))) {
    stop("hako: daemons(remote = ) launches daemons for a host that listens: daemons(n, url = host_url(), remote = )", call. = FALSE)
  }
  dots <- daemons_dots(list(...), listening = !is.null(url))
  if (dots$keep_state) keep_state <- TRUE
  if (missing(n) && is.null(url)) return(status(.compute))
  if (!missing(n) && (!is.numeric(n) || length(n) != 1L || is.na(n) || n < 0)) {
    stop("hako: 'n' must be a single non-negative number", call. = FALSE)
  }
  if (!missing(n) && n == 0 && is.null(url)) {
    reset_profile(.compute)
    return(invisible(structure(list(compute = .compute, n = 0L), class = "hakoDaemons")))
  }
  if (!is.null(url)) parse_url(url)
  old <- .hako$profiles[[.compute]]
  if (!is.null(old)) {
    if (old$alive) {
      stop(sprintf("hako: daemons are already set for compute profile '%s': call daemons(0%s) first to reset them",
                   .compute, if (.compute == "default") "" else sprintf(", .compute = \"%s\"", .compute)), call. = FALSE)
    }
    reset_profile(.compute)
  }
  extra <- dots$host
  pkgs <- NULL
  env <- character()
  if (!is.null(url) && !is.null(token)) {
    # join a remote host as a client
    parse_url(url)
    args <- c("client", url)
    if (!is.null(fingerprint)) args <- c(args, "--fingerprint", fingerprint)
    given <- c(if (!is.null(memory)) "memory", if (!is.null(max_payload)) "max_payload",
               if (isTRUE(keep_state)) "keep_state", names(list(...)))
    if (length(given)) {
      stop(sprintf("hako: daemons(url, token = ) joins a remote host as a client: '%s' is set by that host and its daemons, not here",
                   given[[1L]]), call. = FALSE)
    }
    if (length(mount) || length(packages) || length(tls)) {
      stop("hako: 'mount', 'packages' and 'tls' apply to daemons and hosts this session starts; a remote host's daemons choose their own",
           call. = FALSE)
    }
    env <- c(HAKO_CLIENT_TOKEN = token)
    mode <- "client"
    nloc <- 0L
  } else {
    nloc <- if (missing(n) || !is.null(remote)) 0L else as.integer(n)
    args <- c("host", "--local", nloc)
    if (is.null(url)) {
      args <- c(args, "--no-listen")
    } else {
      u <- parse_url(url)
      listen_host <- if (grepl("^[0-9.]+$", u$host) || u$host == "localhost") u$host else "0.0.0.0"
      if (listen_host == "localhost") listen_host <- "127.0.0.1"
      args <- c(args, "--listen", paste0(listen_host, ":", u$port), "--advertise", u$host, tls_args(tls))
    }
    if (is.null(url) && length(tls)) {
      stop("hako: 'tls' is the certificate of a host that listens for daemons: give it with daemons(url = host_url(), tls = )", call. = FALSE)
    }
    if (!is.null(memory)) args <- c(args, "--memory", as.integer(memory))
    if (!is.null(max_payload)) args <- c(args, "--max-payload", as.integer(max_payload))
    if (isTRUE(keep_state)) args <- c(args, "--keep-state")
    if (!is.null(replicas)) {
      if (is.null(url) && nloc < replicas) {
        stop(sprintf("hako: daemons(%d, replicas = %d): each task runs on %d distinct daemons, so at least %d are needed",
                     nloc, replicas, replicas, replicas), call. = FALSE)
      }
      args <- c(args, "--replicas", replicas)
    }
    if (length(mount)) args <- c(args, mount_args(mount))
    pkgs <- if (length(packages)) resolve_packages(packages, repos)
    args <- c(args, package_args(pkgs))
    args <- c(args, extra)
    mode <- if (is.null(url)) "local" else "listen"
  }
  p <- link_open(.compute, args, env)
  p$mode <- mode
  p$n <- nloc
  p$packages <- sort(unique(as.character(packages)))
  p$repos <- repos
  p$timeout <- timeout
  p$replicas <- replicas
  p$output <- isTRUE(output)
  p$seed <- init_seed(seed)
  p$url <- p$ready[["url"]]
  p$launch <- dots$launch
  assign(.compute, p, envir = .hako$profiles)
  if (nloc > 0L) wait_connections(p, nloc)
  if (nloc > 0L && length(pkgs$set)) preload_packages(pkgs$set, .compute)
  launched <- if (!is.null(remote)) launch_daemons_remote(if (missing(n)) 1L else n, remote, .compute)
  out <- structure(list(compute = .compute, n = nloc, url = p$url, mode = mode,
                        daemon_command = if (mode == "listen") launch_remote(1L, .compute = .compute),
                        fingerprint = p$ready[["fingerprint"]],
                        token = p$ready[["token"]],
                        client_token = p$ready[["client_token"]],
                        client_command = p$ready[["client_command"]], launched = launched),
                   class = "hakoDaemons")
  if (mode == "listen") out else invisible(out)
}

#' @export
print.hakoDaemons <- function(x, ...) {
  if (identical(x$n, 0L) && is.null(x$mode)) {
    cat(sprintf("hako daemons reset (compute profile '%s')\n", x$compute))
    return(invisible(x))
  }
  cat(sprintf("hako daemons, compute profile '%s': %s, %d local sandboxed daemon(s)\n", x$compute, x$mode, x$n))
  if (!is.null(x$url)) cat("  url: ", x$url, "\n", sep = "")
  if (!is.null(x$daemon_command)) {
    cat("  launch a daemon with (", attr(x$daemon_command, "note"), "):\n    ", x$daemon_command, "\n", sep = "")
  }
  invisible(x)
}

#' Evaluate with daemons
#'
#' `with(daemons(...), expr)` evaluates `expr` with those daemons as the
#' default compute profile, then resets them.
#' @param data A 'hakoDaemons' object returned by [daemons()].
#' @param expr An expression.
#' @param ... Unused.
#' @return The value of `expr`.
#' @examples
#' \dontrun{
#' with(daemons(2), hako_map(1:3, sqrt)[.flat])
#' }
#' @export
with.hakoDaemons <- function(data, expr, ...) {
  old <- .hako$default
  .hako$default <- data$compute
  on.exit({
    .hako$default <- old
    reset_profile(data$compute)
  })
  expr
}

# Local daemons join the host asynchronously; wait until they have.
wait_connections <- function(p, n, wait = 120) {
  deadline <- Sys.time() + wait
  repeat {
    cn <- query_info(p)$counters[["connections"]]
    if (cn >= n) return(invisible(TRUE))
    if (Sys.time() > deadline) stop(sprintf("hako: only %d of %d daemons started; host log:\n%s", cn, n, log_tail(p$log)), call. = FALSE)
    Sys.sleep(0.02)
  }
}

compute_name <- function(.compute) {
  if (is.null(.compute)) .hako$default else as.character(.compute)[[1L]]
}

get_profile <- function(.compute = NULL) {
  name <- compute_name(.compute)
  p <- .hako$profiles[[name]]
  if (is.null(p)) {
    stop(sprintf("hako: no daemons are set for compute profile '%s': call daemons(n%s) first (hako tasks run only on sandboxed daemons)",
                 name, if (name == "default") "" else sprintf(", .compute = \"%s\"", name)), call. = FALSE)
  }
  if (!p$alive) stop_dead(p)
  p
}

reset_profile <- function(name) {
  p <- .hako$profiles[[name]]
  if (is.null(p)) return(invisible(FALSE))
  link_close(p)
  rm(list = name, envir = .hako$profiles)
  invisible(TRUE)
}

init_seed <- function(seed) {
  genv <- globalenv()
  had <- exists(".Random.seed", envir = genv, inherits = FALSE)
  if (had) old <- get(".Random.seed", envir = genv)
  oldkind <- RNGkind()
  on.exit({
    RNGkind(oldkind[[1L]], oldkind[[2L]], oldkind[[3L]])
    if (had) assign(".Random.seed", old, envir = genv) else if (exists(".Random.seed", envir = genv, inherits = FALSE)) rm(".Random.seed", envir = genv)
  })
  RNGkind("L'Ecuyer-CMRG")
  if (is.null(seed)) set.seed(NULL) else set.seed(seed)
  get(".Random.seed", envir = genv)
}

parse_url <- function(url) {
  m <- regmatches(url, regexec("^wss://([^:/]+|\\[[^]]+\\]):([0-9]+)/?$", url))[[1L]]
  if (!length(m)) {
    if (grepl("^(ws|tcp|tls\\+tcp)://", url)) stop("hako: daemons connect over TLS WebSockets only; use a wss:// URL (see host_url())", call. = FALSE)
    stop("hako: 'url' must look like wss://HOST:PORT (see host_url())", call. = FALSE)
  }
  list(host = m[[2L]], port = as.integer(m[[3L]]))
}

mount_args <- function(mount) {
  if (!is.character(mount) || is.null(names(mount)) || any(!nzchar(names(mount)))) {
    stop("hako: 'mount' must be a named character vector: c(\"/host/dir\" = \"/guest/dir:ro\")", call. = FALSE)
  }
  bad <- !grepl("^/[^:]*(:ro|:rw)?$", mount)
  if (any(bad)) {
    stop(sprintf("hako: mount target '%s' must be an absolute guest path, optionally ending in :ro or :rw",
                 mount[bad][[1L]]), call. = FALSE)
  }
  missing_dirs <- !dir.exists(names(mount))
  if (any(missing_dirs)) {
    stop(sprintf("hako: cannot mount '%s': no such directory", names(mount)[missing_dirs][[1L]]), call. = FALSE)
  }
  hostdirs <- normalizePath(names(mount), mustWork = TRUE)
  as.vector(rbind("--mount", paste0(hostdirs, ":", unname(mount))))
}

#' A URL to listen for remote daemons
#'
#' Unlike mirai's (whose default is plain `tcp://`), the URL is always a TLS
#' WebSocket one: `ws` and `tls` are accepted as `TRUE` only.
#'
#' @param tls Must be `TRUE`: hako daemons dial over TLS WebSockets only.
#' @param port Port (0: any free port; the host reports the one it took).
#' @param host Host name or address daemons should dial.
#' @param ws Must be `TRUE` (WebSockets), as in mirai's `host_url(ws = TRUE)`.
#' @return A `wss://HOST:PORT` string for [daemons()]`(url = )`.
#' @examples
#' host_url()
#' host_url(port = 5555, host = "127.0.0.1")
#' @export
host_url <- function(tls = TRUE, port = 0L, host = Sys.info()[["nodename"]], ws = TRUE) {
  if (!isTRUE(tls)) stop("hako: daemons connect over TLS WebSockets only: host_url(tls = TRUE)", call. = FALSE)
  if (!isTRUE(ws)) stop("hako: daemons connect over TLS WebSockets only: host_url(ws = TRUE)", call. = FALSE)
  sprintf("wss://%s:%d", host, as.integer(port))
}
