#' Daemon statistics
#'
#' `info()` returns the counters of a compute profile's host, like mirai's:
#' `connections` (daemons connected now), `cumulative` (ever), `awaiting`
#' (queued tasks), `executing` and `completed`. `status()` returns a list
#' with `connections`, `daemons` (the listening URL or "local") and `hako`
#' (awaiting, executing, completed), plus `table`, one row per daemon.
#'
#' @param .compute Compute profile (`NULL`: default).
#' @return `info()`: a named integer vector, or `NULL` when no daemons are
#'   set. `status()`: a list.
#' @examples
#' \dontrun{
#' daemons(2)
#' info()
#' status()$table
#' daemons(0)
#' }
#' @export
info <- function(.compute = NULL) {
  p <- .hako$profiles[[compute_name(.compute)]]
  if (is.null(p) || !p$alive) return(NULL)
  r <- query_info(p)
  r$counters
}

#' @rdname info
#' @export
status <- function(.compute = NULL) {
  p <- .hako$profiles[[compute_name(.compute)]]
  if (is.null(p) || !p$alive) {
    return(list(connections = 0L, daemons = NULL, hako = c(awaiting = 0L, executing = 0L, completed = 0L)))
  }
  r <- query_info(p)
  cn <- r$counters
  list(connections = unname(cn[["connections"]]),
       daemons = if (is.null(p$url)) "local" else p$url,
       hako = cn[c("awaiting", "executing", "completed")],
       table = r$table)
}

query_info <- function(p, wait = 30) {
  p$info <- NULL
  send_frame(p, T_INFO)
  deadline <- Sys.time() + wait
  while (is.null(p$info)) {
    poll(p, 0.2)
    if (!p$alive) stop_dead(p)
    if (Sys.time() > deadline) stop("hako: the host did not answer INFO", call. = FALSE)
  }
  parts <- strsplit(p$info, "\n\n", fixed = TRUE)[[1L]]
  kv <- parse_kv(strsplit(parts[[1L]], "\n", fixed = TRUE)[[1L]])
  counters <- vapply(kv, function(v) as.integer(v), 0L)
  tab <- if (length(parts) > 1L && nzchar(parts[[2L]])) {
    utils::read.delim(text = parts[[2L]], sep = "\t", na.strings = "NA", stringsAsFactors = FALSE)
  } else NULL
  list(counters = counters, table = tab)
}

#' Evaluate an expression on every daemon
#'
#' Evaluates `.expr` on every daemon connected now and on every daemon that
#' joins later, and (as daemons reset their sandbox between tasks) again
#' after each reset, so that what it sets up persists: assign into the
#' global environment (`x <<- 1`, `assign(..., envir = globalenv())`) or
#' attach packages (`library(stats4)`). Its value is discarded. The host
#' keeps everywhere() code for daemons that join later, up to a bound: past
#' it, everywhere() signals an error with the host's reason.
#'
#' @inheritParams hako
#' @param .timeout Seconds to wait for the host's acknowledgement.
#' @return Invisibly, the number of daemons it was sent to now.
#' @examples
#' \dontrun{
#' daemons(2)
#' everywhere(z <<- 10)
#' hako(z + 1)[]
#' daemons(0)
#' }
#' @export
everywhere <- function(.expr, ..., .args = list(), .compute = NULL, .timeout = 30) {
  expr <- task_expr(substitute(.expr), parent.frame())
  p <- get_profile(.compute)
  g <- dots_globals(...)
  # the expression runs in a child of globalenv: `<-` would stay local, so
  # evaluate it directly in the global environment.
  wrapped <- bquote(eval(quote(.(expr)), globalenv()))
  payload <- task_payload(wrapped, a = .args, g = g)
  check_size(p, payload)
  id <- new_id(p)
  key <- as.character(id)
  # the host refuses an everywhere() (e.g. past its bound on the code it
  # keeps) with a RESULT of the same id instead of the acknowledgement
  refusal <- new_hako(p, id, relay = FALSE)
  suspendInterrupts({
    assign(key, refusal, envir = p$pending)
    send_frame(p, T_EVERYWHERE, c(u32(id), payload))
  })
  on.exit(pending_take(p, key))
  deadline <- Sys.time() + .timeout
  while (!exists(key, envir = p$acks, inherits = FALSE)) {
    poll(p, 0.2)
    if (!p$alive) stop_dead(p)
    if (refusal$resolved) stop("hako: ", err_msg(refusal$value), call. = FALSE)
    if (Sys.time() > deadline) stop("hako: no acknowledgement of everywhere() from the host", call. = FALSE)
  }
  n <- get(key, envir = p$acks)
  rm(list = key, envir = p$acks)
  invisible(n)
}

#' Launch daemons for a listening host
#'
#' `launch_local()` starts `n` `hako daemon` processes on this machine that
#' dial the host of a compute profile set with `daemons(url = ...)`.
#' `launch_remote()` returns the commands to run on other machines.
#'
#' @param n Number of daemons.
#' @param ... Volunteer caps as `hako daemon` options `name = value`
#'   (underscores become dashes), e.g. `memory = 512`, `task_timeout = 60`,
#'   `max_tasks = 100`, `idle_time = 300`, `keep_state = TRUE`.
#' @param .compute Compute profile (`NULL`: default).
#' @return `launch_local()`: invisibly, the process ids of the daemons.
#'   `launch_remote()`: a character vector of `n` shell commands.
#' @examples
#' \dontrun{
#' daemons(url = host_url(host = "127.0.0.1"))
#' launch_local(2)
#' launch_remote(1)
#' daemons(0)
#' }
#' @export
launch_local <- function(n = 1L, ..., .compute = NULL) {
  p <- get_profile(.compute)
  r <- p$ready
  if (is.null(r[["token"]]) || is.null(r[["url"]])) {
    stop("hako: this compute profile's host does not listen for daemons: set it with daemons(url = host_url())", call. = FALSE)
  }
  args <- c("daemon", r[["url"]], "--fingerprint", r[["fingerprint"]], "--autoexit", cli_options(list(...)))
  old <- Sys.getenv("HAKO_TOKEN", unset = NA)
  Sys.setenv(HAKO_TOKEN = r[["token"]])
  on.exit(if (is.na(old)) Sys.unsetenv("HAKO_TOKEN") else Sys.setenv(HAKO_TOKEN = old))
  bin <- hako_binary()
  pids <- vapply(seq_len(n), function(i) {
    spawn(bin, c(args, "--name", sprintf("local-%d", length(p$launched) + i)), file.path(p$dir, sprintf("daemon-%d.log", length(p$launched) + i)))
  }, 0L)
  p$launched <- c(p$launched, pids)
  invisible(pids)
}

#' @rdname launch_local
#' @export
launch_remote <- function(n = 1L, ..., .compute = NULL) {
  p <- get_profile(.compute)
  cmd <- p$ready[["daemon_command"]]
  if (is.null(cmd)) stop("hako: this compute profile's host does not listen for daemons: set it with daemons(url = host_url())", call. = FALSE)
  extra <- cli_options(list(...))
  if (length(extra)) cmd <- paste(cmd, paste(vapply(extra, shQuote, ""), collapse = " "))
  rep(cmd, n)
}

#' Lend this machine's cores to a hako host
#'
#' Runs `hako daemon`: this machine runs the host's tasks in a sandbox, with
#' the caps the volunteer sets here (the host cannot raise them). Blocks
#' until the daemon exits (with `autoexit`, when the host goes away).
#'
#' @param url The host's `wss://HOST:PORT`.
#' @param token The host's join token.
#' @param fingerprint The host's certificate fingerprint (`SHA256:...`).
#' @param memory Memory cap of the sandbox in MiB.
#' @param task_timeout Cap on any task's evaluation time, in seconds.
#' @param max_tasks,idle_time,wall_time Leave after this many tasks, seconds
#'   idle, or seconds in all.
#' @param autoexit Exit when the host goes away instead of reconnecting.
#' @param mount Directories of this machine the host's tasks may read, as
#'   `c("/host/dir" = "/guest/dir:ro")` (`:rw` to let them write); nothing
#'   else of this machine's filesystem is visible to them.
#' @param packages R-only packages installed here to make available to the
#'   host's tasks (see [daemons()]).
#' @param ... Further `hako daemon` options as `name = value`.
#' @param log Where the daemon's log goes: `""` (the console) or a file.
#' @return Invisibly, the exit status of `hako daemon`.
#' @examples
#' \dontrun{
#' daemon("wss://host.example:5555", token = "...", fingerprint = "SHA256:...", memory = 512)
#' }
#' @export
daemon <- function(url, token, fingerprint = NULL, memory = NULL, task_timeout = NULL, max_tasks = NULL,
                   idle_time = NULL, wall_time = NULL, autoexit = TRUE, mount = NULL, packages = NULL, ...,
                   log = "") {
  parse_url(url)
  opts <- c(list(fingerprint = fingerprint, memory = memory, task_timeout = task_timeout, max_tasks = max_tasks,
                 idle_time = idle_time, wall_time = wall_time, autoexit = isTRUE(autoexit)), list(...))
  args <- c("daemon", url, cli_options(opts))
  if (length(mount)) args <- c(args, mount_args(mount))
  if (length(packages)) args <- c(args, package_mounts(packages))
  old <- Sys.getenv("HAKO_TOKEN", unset = NA)
  Sys.setenv(HAKO_TOKEN = token)
  on.exit(if (is.na(old)) Sys.unsetenv("HAKO_TOKEN") else Sys.setenv(HAKO_TOKEN = old))
  invisible(system2(hako_binary(), args, stdout = log, stderr = log))
}
