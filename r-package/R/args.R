# mirai's arguments in hako. Each one a mirai user may pass is either
# supported with mirai's meaning (mapped onto a hako option) or refused with
# an R error naming hako's equivalent: never ignored, and never handed to
# the `hako` CLI unchecked (whose usage text means nothing to an R user).
# Durations are milliseconds at the R level, as in mirai; the CLI takes
# seconds.

# A refusal: what was asked, why hako does not do it, what to do instead.
refuse_arg <- function(fun, arg, why) {
  stop(sprintf("hako: %s(%s) is not supported: %s", fun, arg, why), call. = FALSE)
}

# A name in `...` that no rule knows: an R error naming it.
unknown_args <- function(fun, names, known) {
  stop(sprintf("hako: %s() has no argument %s (accepted in '...': %s)", fun,
               paste(sQuote(names, FALSE), collapse = ", "), paste(known, collapse = ", ")), call. = FALSE)
}

# `...` as a named list; unnamed arguments are an R error.
named_dots <- function(fun, dots) {
  if (length(dots) && (is.null(names(dots)) || any(!nzchar(names(dots))))) {
    stop(sprintf("hako: the arguments in %s()'s '...' must be named (name = value)", fun), call. = FALSE)
  }
  dots
}

# A duration in milliseconds (`Inf` or `NULL`: none) as the CLI's seconds.
ms_secs <- function(v, what) {
  if (is.null(v)) return(NULL)
  if (!is.numeric(v) || length(v) != 1L || is.na(v) || v < 0) {
    stop(sprintf("hako: '%s' must be a single non-negative number of milliseconds", what), call. = FALSE)
  }
  if (is.infinite(v)) return(NULL)
  format(v / 1000, scientific = FALSE, digits = 15)
}

count_arg <- function(v, what) {
  if (is.null(v)) return(NULL)
  if (!is.numeric(v) || length(v) != 1L || is.na(v) || v < 1) {
    stop(sprintf("hako: '%s' must be a single positive number", what), call. = FALSE)
  }
  if (is.infinite(v)) return(NULL)
  as.character(as.integer(v))
}

# `.args` as mirai takes it: a named list, or an environment whose objects
# are taken as one.
task_args <- function(.args, fun = "hako") {
  if (is.environment(.args)) return(as.list(.args, all.names = TRUE))
  if (!is.list(.args) || (length(.args) && (is.null(names(.args)) || any(!nzchar(names(.args)))))) {
    stop(sprintf("hako: %s()'s '.args' must be a named list or an environment", fun), call. = FALSE)
  }
  .args
}

# hako's old names of the daemon caps, in seconds: now mirai's, in milliseconds.
RENAMED <- c(idle_time = "idletime", wall_time = "walltime", max_tasks = "maxtasks", task_timeout = "timeout")

renamed_arg <- function(fun, k) {
  unit <- if (k == "max_tasks") "" else ", in milliseconds"
  stop(sprintf("hako: %s(%s = ) is now %s(%s = )%s, as in mirai", fun, k, fun, RENAMED[[k]], unit), call. = FALSE)
}

# mirai's daemon() arguments (given to daemon(), launch_local(),
# launch_remote(), or to daemons(url = ) for its launchers) as `hako daemon`
# options. `opts` is a named list; those not given are NULL.
DAEMON_ARGS <- c("dispatcher", "asyncdial", "autoexit", "cleanup", "output", "idletime", "walltime", "maxtasks",
                 "tlscert", "rs", "timeout", "memory", "keep_state", "name", "max_payload", "max_backoff",
                 "max_output")

daemon_cli <- function(fun, opts) {
  opts <- named_dots(fun, opts)
  old <- intersect(names(opts), names(RENAMED))
  if (length(old)) renamed_arg(fun, old[[1L]])
  bad <- setdiff(names(opts), DAEMON_ARGS)
  if (length(bad)) unknown_args(fun, bad, DAEMON_ARGS)
  o <- function(k) opts[[k]]
  if (!is.null(o("dispatcher")) && !isTRUE(o("dispatcher"))) {
    refuse_arg(fun, "dispatcher = FALSE", "a hako daemon always takes its tasks from the host's first-in, first-out queue (mirai's dispatcher); drop the argument")
  }
  if (!is.null(o("asyncdial")) && !isTRUE(o("asyncdial"))) {
    refuse_arg(fun, "asyncdial = FALSE", "a hako daemon always keeps dialling until the host answers (as mirai's asyncdial = TRUE), backing off up to max_backoff seconds")
  }
  if (!is.null(o("output")) && !isFALSE(o("output"))) {
    refuse_arg(fun, "output = TRUE", "a task's output is captured in its sandbox and relayed to the R session that sent it (daemons(output = TRUE) there), never printed on the daemon's console")
  }
  if (!is.null(o("rs"))) {
    refuse_arg(fun, "rs = ", "each task gets its random stream from the host, set with daemons(seed = ) there")
  }
  autoexit <- o("autoexit")
  if (!is.null(autoexit) && !(isTRUE(autoexit) || isFALSE(autoexit))) {
    refuse_arg(fun, "autoexit = NA", "use autoexit = TRUE (leave when the host goes) or FALSE (keep dialling until a host answers at the URL)")
  }
  cleanup <- o("cleanup")
  if (!is.null(cleanup) && !(isTRUE(cleanup) || isFALSE(cleanup))) {
    stop("hako: 'cleanup' must be TRUE or FALSE", call. = FALSE)
  }
  out <- character()
  add <- function(flag, v) if (!is.null(v)) out <<- c(out, flag, v)
  add("--task-timeout", ms_secs(o("timeout"), "timeout"))
  add("--idle-time", ms_secs(o("idletime"), "idletime"))
  add("--wall-time", ms_secs(o("walltime"), "walltime"))
  add("--max-tasks", count_arg(o("maxtasks"), "maxtasks"))
  add("--memory", count_arg(o("memory"), "memory"))
  add("--max-payload", count_arg(o("max_payload"), "max_payload"))
  add("--max-output", count_arg(o("max_output"), "max_output"))
  add("--max-backoff", ms_secs(o("max_backoff"), "max_backoff"))
  if (!is.null(o("name"))) add("--name", as.character(o("name"))[[1L]])
  if (!is.null(o("tlscert"))) add("--ca", pem_file(o("tlscert"), "tlscert"))
  if (isFALSE(cleanup) || isTRUE(o("keep_state"))) out <- c(out, "--keep-state")
  if (isTRUE(autoexit)) out <- c(out, "--autoexit")
  out
}

# A PEM given as mirai takes it: a file path, or the PEM text itself.
pem_file <- function(x, what) {
  if (!is.character(x) || !length(x) || is.na(x[[1L]])) stop(sprintf("hako: '%s' must be a PEM file path or PEM text", what), call. = FALSE)
  x <- x[nzchar(x)]
  if (length(x) == 1L && file.exists(x)) return(normalizePath(x))
  if (!all(grepl("-----BEGIN", x, fixed = TRUE))) {
    stop(sprintf("hako: '%s' is neither a readable file nor PEM text", what), call. = FALSE)
  }
  dir <- tempfile("hako-pem-")
  dir.create(dir, mode = "0700")
  f <- file.path(dir, "pem")
  writeLines(x, f)
  Sys.chmod(f, "0600")
  f
}

# `hako host` options a user may give in daemons()'s `...` (durations in
# milliseconds), besides mirai's daemon arguments.
HOST_OPTS <- c("retries", "shutdown_grace", "heartbeat", "handshake_timeout", "max_everywhere", "max_unread",
               "max_queued", "max_output", "identity", "cert", "key", "advertise", "no_clients")
HOST_MS <- c("shutdown_grace", "heartbeat", "handshake_timeout")

# daemons()'s `...`: mirai's daemon arguments and hako's host options.
# Returns list(host = CLI arguments of `hako host`, keep_state = from
# cleanup, launch = the daemon arguments kept for launch_local() and
# launch_remote() of a listening host).
daemons_dots <- function(dots, listening) {
  dots <- named_dots("daemons", dots)
  old <- intersect(names(dots), names(RENAMED))
  if (length(old)) renamed_arg("daemons", old[[1L]])
  mirai_names <- c("asyncdial", "autoexit", "cleanup", "idletime", "walltime", "maxtasks", "tlscert", "rs")
  bad <- setdiff(names(dots), c(mirai_names, HOST_OPTS))
  if (length(bad)) unknown_args("daemons", bad, c(mirai_names, HOST_OPTS))
  d <- dots[intersect(names(dots), mirai_names)]
  h <- dots[intersect(names(dots), HOST_OPTS)]
  keep_state <- isFALSE(d$cleanup)
  if (!listening) {
    # local daemons run in the host's process: they end with it, and take
    # no per-daemon caps
    caps <- intersect(names(d), c("idletime", "walltime", "maxtasks", "asyncdial", "tlscert", "rs"))
    if (length(caps)) {
      refuse_arg("daemons", paste0(caps[[1L]], " = "),
                 "local daemons live in the host's process and leave with it; for daemons with their own caps use daemons(url = host_url(host = \"127.0.0.1\")) then launch_local(n, idletime = , walltime = , maxtasks = )")
    }
    if (!is.null(d$autoexit) && !isTRUE(d$autoexit)) {
      refuse_arg("daemons", "autoexit = FALSE", "local daemons live in the host's process and always leave with it; a daemon that outlives its host is started with daemon(url, autoexit = FALSE)")
    }
  }
  # the same checks as daemon() makes, done now rather than at launch
  launch <- d[setdiff(names(d), "cleanup")]
  if (isFALSE(d$cleanup)) launch$keep_state <- TRUE
  if (length(launch)) daemon_cli("daemons", launch)
  out <- character()
  for (k in names(h)) {
    v <- h[[k]]
    flag <- paste0("--", gsub("_", "-", k, fixed = TRUE))
    if (isTRUE(v)) out <- c(out, flag)
    else if (isFALSE(v) || is.null(v)) next
    else out <- c(out, flag, if (k %in% HOST_MS) ms_secs(v, k) else as.character(v)[[1L]])
  }
  list(host = out, keep_state = keep_state, launch = launch)
}

# daemons()'s own mirai arguments that have no per-daemon meaning.
check_daemons_args <- function(remote, dispatcher, sync, serial, pass) {
  if (!is.null(remote) && !inherits(remote, "hakoRemote")) {
    refuse_arg("daemons", "remote = ", "hako launches daemons with ssh_config() or cluster_config() (see launch_remote()); mirai's remote_config() and http_config() are not supported")
  }
  if (!isTRUE(dispatcher)) {
    refuse_arg("daemons", "dispatcher = FALSE", "hako's host always queues tasks first in, first out and hands each to the next free daemon (mirai's dispatcher), which is also what lets .timeout and stop_hako() cancel; drop the argument")
  }
  if (!isFALSE(sync)) {
    refuse_arg("daemons", "sync = TRUE", "tasks always run in a sandboxed daemon, never in this R session; daemons(1) runs them one at a time, in order")
  }
  if (!is.null(serial)) {
    refuse_arg("daemons", "serial = ", "reference objects (external pointers) cannot enter a sandbox; send plain R data")
  }
  if (!is.null(pass)) {
    refuse_arg("daemons", "pass = ", "give 'tls' an unencrypted key (a file readable by you only)")
  }
  invisible()
}

# mirai's `tls`: a PEM file with the certificate (chain) and its key, or
# c(certificate, key) as PEM text: `hako host --cert --key`.
tls_args <- function(tls) {
  if (is.null(tls)) return(character())
  if (is.character(tls) && length(tls) == 2L) return(c("--cert", pem_file(tls[[1L]], "tls"), "--key", pem_file(tls[[2L]], "tls")))
  f <- pem_file(tls, "tls")
  c("--cert", f, "--key", f)
}

# The daemon arguments of launch_local()/launch_remote(): those given, else
# those given to daemons(url = , ...), as in mirai. Local launches leave
# with their host unless told otherwise.
launch_args <- function(fun, p, dots, autoexit) {
  d <- if (length(dots)) dots else p$launch
  if (fun == "launch_local" && !is.null(d$name)) refuse_arg(fun, "name = ", "launch_local() names its daemons local-1, local-2, ...")
  if (autoexit && is.null(d$autoexit)) d$autoexit <- TRUE
  daemon_cli(fun, d)
}
