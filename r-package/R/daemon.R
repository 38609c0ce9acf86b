#' Lend this machine's cores to a hako host
#'
#' Runs `hako daemon`: this machine runs the host's tasks in a sandbox (or
#' `jobs` sandboxes), with the caps the volunteer sets here (the host cannot
#' raise them), at the lowest CPU priority. Blocks until the daemon exits
#' (with `autoexit`, when the host goes away). `hako daemon --help` lists
#' the defaults and what a host can and cannot do to this machine.
#'
#' mirai's arguments keep mirai's meaning and units: durations are in
#' milliseconds (`idletime`, `walltime`, `timeout`). Those hako cannot honour
#' are an R error that says what to use instead: `dispatcher = FALSE`,
#' `asyncdial = FALSE` (a hako daemon always keeps dialling), `output =
#' TRUE` (output is relayed to the R session that sent the task), `rs`
#' (random streams come from the host), `autoexit = NA`.
#'
#' @param url The host's `wss://HOST:PORT`.
#' @param token The host's join token (default: the environment variable
#'   `HAKO_TOKEN`).
#' @param fingerprint The host's certificate fingerprint (`SHA256:...`).
#' @param dispatcher `TRUE` only (as in mirai, the daemon takes tasks from
#'   the host's queue).
#' @param ... Further `hako daemon` options: `name`, `max_payload` (MiB),
#'   `max_output` (MiB), `max_backoff` (milliseconds). Any other name is an
#'   R error naming it.
#' @param asyncdial `TRUE` only: the daemon keeps dialling until the host
#'   answers.
#' @param autoexit `TRUE`: exit when the host goes away; `FALSE`: keep
#'   dialling the URL until a host answers again.
#' @param cleanup `TRUE`: each task starts from a pristine R; `FALSE`: keep
#'   state between tasks.
#' @param output `FALSE` only: tasks' output is relayed to the R session
#'   that sent them.
#' @param idletime,walltime Leave after this many milliseconds without a
#'   task, or in all (`Inf`: never).
#' @param maxtasks Leave after this many tasks (`Inf`: never).
#' @param tlscert Without `fingerprint`: a CA certificate (PEM file or text)
#'   to trust besides the web PKI.
#' @param rs Not supported (an R error): each task's random stream comes
#'   from the host (`daemons(seed = )`).
#' @param memory Memory cap of each job's sandbox in MiB (default 1024).
#' @param timeout Cap on any task's evaluation time, in milliseconds
#'   (default: 10 minutes; `Inf`: none).
#' @param jobs How many sandboxes this daemon runs, each running one task
#'   at a time within `memory` (so up to `jobs * memory` MiB in all), each
#'   its own connection to the host; at most this machine's cores.
#'   `maxtasks` counts the tasks of all jobs together.
#' @param mount Directories of this machine the host's tasks may read, as
#'   `c("/host/dir" = "/guest/dir:ro")` (`:rw` to let them write); nothing
#'   else of this machine's filesystem is visible to them.
#' @param packages R-only packages installed here to make available to the
#'   host's tasks (see [daemons()]).
#' @param log Where the daemon's log goes: `""` (the console) or a file.
#' @return Invisibly, the exit status of `hako daemon`.
#' @examples
#' \dontrun{
#' daemon("wss://host.example:5555", token = "...", fingerprint = "SHA256:...",
#'        memory = 512, idletime = 60000)
#' }
#' @export
daemon <- function(url, token = Sys.getenv("HAKO_TOKEN"), fingerprint = NULL, dispatcher = TRUE, ...,
                   asyncdial = TRUE, autoexit = TRUE, cleanup = TRUE, output = FALSE, idletime = Inf,
                   walltime = Inf, maxtasks = Inf, tlscert = NULL, rs = NULL, memory = NULL, timeout = NULL,
                   jobs = 1L, mount = NULL, packages = NULL, log = "") {
  parse_url(url)
  if (!is.character(token) || length(token) != 1L || is.na(token) || !nzchar(token)) {
    stop("hako: daemon() needs the host's join token (token = ), as printed by the host", call. = FALSE)
  }
  # Inf: no cap, where NULL keeps the daemon's 10-minute default.
  no_timeout <- is.numeric(timeout) && length(timeout) == 1L && isTRUE(timeout == Inf)
  opts <- c(list(dispatcher = dispatcher, asyncdial = asyncdial, autoexit = autoexit, cleanup = cleanup,
                 output = output, idletime = idletime, walltime = walltime, maxtasks = maxtasks,
                 tlscert = tlscert, rs = rs, memory = memory, timeout = if (!no_timeout) timeout), list(...))
  args <- c("daemon", url, if (!is.null(fingerprint)) c("--fingerprint", fingerprint), daemon_cli("daemon", opts),
            if (no_timeout) c("--task-timeout", "none"), if (!is.null(j <- count_arg(jobs, "jobs"))) c("--jobs", j))
  if (length(mount)) args <- c(args, mount_args(mount))
  if (length(packages)) args <- c(args, package_mounts(packages))
  bin <- hako_binary()
  invisible(with_envvars(list(HAKO_TOKEN = token), system2(bin, args, stdout = log, stderr = log)))
}
