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

# --- A child's log, read while it starts -----------------------------------

# Reads a log as it grows: log_lines() returns the complete lines written
# since the previous call.
log_reader <- function(log) {
  r <- new.env(parent = emptyenv())
  r$log <- log
  r$pos <- 0
  r
}

log_lines <- function(r) {
  size <- file.size(r$log)
  if (is.na(size) || size <= r$pos) return(character())
  con <- file(r$log, "rb")
  on.exit(close(con))
  seek(con, r$pos)
  bytes <- readBin(con, raw(), size - r$pos)
  nl <- which(bytes == as.raw(10L))
  if (!length(nl)) return(character())
  last <- nl[[length(nl)]]
  r$pos <- r$pos + last
  strsplit(rawToChar(bytes[seq_len(last - 1L)]), "\n", fixed = TRUE)[[1L]]
}

# The progress of a first start (fetching webR, compiling R.wasm, saving
# R's start-up state: a minute or two, once per machine), shown in this
# session as the host reports it in its log (its `hako: [start-up] ...`
# lines): as cli
# steps when cli is installed, as messages otherwise. Nothing is shown for a
# start from the cache, whose log has no such lines.
startup_progress <- function(log) {
  pr <- log_reader(log)
  pr$cli <- requireNamespace("cli", quietly = TRUE)
  pr$env <- new.env()
  pr$stepping <- FALSE
  pr$seen <- Sys.time()
  pr
}

# Shows what the log added since the last call; returns TRUE if it added a
# step (the start is making progress).
progress_poll <- function(pr) {
  lines <- log_lines(pr)
  steps <- safe_text(sub(STARTUP, "", grep(STARTUP, lines, value = TRUE)))
  for (s in steps) progress_show(pr, s)
  # A live spinner on a terminal; elsewhere cli would repeat the step's line.
  if (pr$stepping && pr$cli && cli::is_dynamic_tty()) cli::cli_progress_update(.envir = pr$env)
  if (length(steps)) pr$seen <- Sys.time()
  length(steps) > 0L
}

# How the host marks the lines of its start-up steps in a log.
STARTUP <- "^hako: \\[start-up\\] "

progress_show <- function(pr, step) {
  if (!pr$cli) {
    message("hako: ", step)
    return(invisible())
  }
  # cli times each step itself: the host's lines that only say how long the
  # step before took ("...: done in 12.9 s", "translated R.wasm ... in 6.5 s")
  # add nothing.
  if (grepl(" in [0-9.]+ s$", step)) return(invisible())
  if (startsWith(step, "R is ready")) {
    progress_done(pr)
    cli::cli_alert_success(escape_braces(step))
    return(invisible())
  }
  cli::cli_progress_step(escape_braces(step), spinner = TRUE, .envir = pr$env)
  pr$stepping <- TRUE
  invisible()
}

progress_done <- function(pr) {
  if (pr$stepping && pr$cli) cli::cli_progress_done(.envir = pr$env)
  pr$stepping <- FALSE
  invisible()
}

# cli interpolates {...}: text from the host is shown as it is.
escape_braces <- function(s) gsub("}", "}}", gsub("{", "{{", s, fixed = TRUE), fixed = TRUE)

# --- The host's own words when it stops during start-up ----------------------

# What the host said went wrong, from its log: its ERROR lines without the
# timestamp and level, else its last lines other than its start-up steps
# (a usage error, a set-up error).
host_error_text <- function(log) {
  if (!file.exists(log)) return("")
  lines <- readLines(log, warn = FALSE)
  stamp <- "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z +"
  err <- grep(paste0(stamp, "ERROR "), lines, value = TRUE)
  if (length(err)) return(safe_text(paste(sub(paste0(stamp, "ERROR +"), "", err), collapse = "\n")))
  own <- lines[!grepl(paste0(stamp, "(INFO|DEBUG|TRACE) "), lines) & !grepl(STARTUP, lines)]
  safe_text(paste(utils::tail(own, 15L), collapse = "\n"))
}

# Waits a moment for a child that is stopping to be gone (so its log is
# complete), then raises its own words as the R error.
stop_startup <- function(pid, log, what) {
  deadline <- Sys.time() + 5
  while (pid_alive(pid) && Sys.time() < deadline) Sys.sleep(0.05)
  if (pid_alive(pid)) tools::pskill(pid, tools::SIGKILL)
  text <- host_error_text(log)
  if (!nzchar(text)) text <- "(its log is empty)"
  stop(sprintf("hako: %s:\n%s", what, text), call. = FALSE)
}
