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
  bin <- hako_binary()
  invisible(with_envvars(list(HAKO_TOKEN = token), system2(bin, args, stdout = log, stderr = log)))
}
