#' Launch daemons for a listening host
#'
#' `launch_local()` starts `n` `hako daemon` processes on this machine that
#' dial the host of a compute profile set with `daemons(url = ...)`.
#' `launch_remote()` returns the commands to run on other machines.
#'
#' @param n Number of daemons.
#' @param ... [daemon()]'s arguments, mirai's names and units: e.g.
#'   `memory = 512` (MiB), `timeout = 60000`, `idletime = 300000`,
#'   `walltime` (milliseconds), `maxtasks = 100`, `cleanup = FALSE`,
#'   `autoexit`. Without any, those given to [daemons()]`(url = , ...)`.
#' @param remote mirai's launch configuration: not supported (an R error);
#'   run the commands `launch_remote()` returns.
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
  args <- c("daemon", r[["url"]], "--fingerprint", r[["fingerprint"]], launch_args("launch_local", p, list(...), TRUE))
  bin <- hako_binary()
  pids <- with_envvars(list(HAKO_TOKEN = r[["token"]]), vapply(seq_len(n), function(i) {
    spawn(bin, c(args, "--name", sprintf("local-%d", length(p$launched) + i)), file.path(p$dir, sprintf("daemon-%d.log", length(p$launched) + i)))
  }, 0L))
  p$launched <- c(p$launched, pids)
  invisible(pids)
}

#' @rdname launch_local
#' @export
launch_remote <- function(n = 1L, remote = NULL, ..., .compute = NULL) {
  if (!is.null(remote)) {
    refuse_arg("launch_remote", "remote = ", "hako has no remote launch configurations; run the commands it returns on the other machines")
  }
  p <- get_profile(.compute)
  cmd <- p$ready[["daemon_command"]]
  if (is.null(cmd)) stop("hako: this compute profile's host does not listen for daemons: set it with daemons(url = host_url())", call. = FALSE)
  extra <- launch_args("launch_remote", p, list(...), FALSE)
  if (grepl("--autoexit", cmd, fixed = TRUE)) extra <- setdiff(extra, "--autoexit")
  if (length(extra)) cmd <- paste(cmd, paste(vapply(extra, shQuote, ""), collapse = " "))
  rep(cmd, n)
}

