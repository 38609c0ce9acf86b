# Child processes: the `hako host`/`hako client` behind a link and the
# daemons of launch_local(), started in the background with their own logs.

# Start a `hako` command in the background; returns its pid.
# system2(wait = FALSE) gives no pid, so a shell starts it and echoes $!.
# `--new-session` puts it in a session of its own: the terminal's signals
# (Ctrl-C in this session) do not reach it. It closes every descriptor it
# inherits above stderr at start-up, so it holds no socket of this session;
# and with `--watch-pid` it exits when this session's process is gone, even
# if another child of this session still holds the link.
spawn <- function(cmd, args, log) {
  args <- c(args, "--new-session", "--watch-pid", Sys.getpid())
  line <- paste(c(shQuote(cmd), vapply(args, shQuote, "")), collapse = " ")
  sh <- sprintf("%s </dev/null >>%s 2>&1 & echo $!", line, shQuote(log))
  out <- suppressWarnings(system2("/bin/sh", c("-c", shQuote(sh)), stdout = TRUE, stderr = FALSE))
  pid <- suppressWarnings(as.integer(out[length(out)]))
  if (!length(pid) || is.na(pid)) stop("hako: could not start ", cmd, call. = FALSE)
  pid
}

pid_alive <- function(pid) {
  !is.null(pid) && !is.na(pid) && isTRUE(suppressWarnings(tools::pskill(pid, 0L)))
}

log_tail <- function(log, n = 15L) {
  if (!file.exists(log)) return("")
  l <- readLines(log, warn = FALSE)
  safe_text(paste(utils::tail(l, n), collapse = "\n"))
}

# Evaluates `code` with the environment variables `env` (a named list or
# character vector) set, so that a child started in it inherits them, and
# restores each one afterwards (unset again if it was unset). Tokens reach
# children this way, never on a command line that `ps` shows.
with_envvars <- function(env, code) {
  if (length(env)) {
    old <- Sys.getenv(names(env), unset = NA, names = TRUE)
    on.exit(restore_envvars(old), add = TRUE)
    do.call(Sys.setenv, as.list(env))
  }
  code
}

restore_envvars <- function(old) {
  for (k in names(old)) {
    if (is.na(old[[k]])) Sys.unsetenv(k) else do.call(Sys.setenv, stats::setNames(list(old[[k]]), k))
  }
}
