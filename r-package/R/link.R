# The link's life: start the child and greet it (HELLO / READY), fail every
# waiting task when it is gone, shut it down. Framing is in frame.R, result
# delivery in deliver.R.

# Start the child (`hako host ...` or `hako client ...`), connect and
# exchange HELLO / READY, and wait for its local daemons. Returns the profile
# environment, ready to use. A first start on a machine takes a minute or
# two (fetching webR, compiling R.wasm): its steps are shown as the child
# reports them. If the child stops first, its own words are the R error.
link_open <- function(name, args, env = character()) {
  bin <- hako_binary()
  dir <- tempfile("hako-")
  dir.create(dir, mode = "0700")
  link_file <- file.path(dir, "link")
  log <- file.path(dir, "host.log")
  args <- c(args, "--link", "127.0.0.1:0", "--link-file", link_file)
  pid <- with_envvars(env, spawn(bin, args, log))
  pr <- startup_progress(log)
  on.exit(progress_done(pr))
  what <- sprintf("`hako %s` stopped before it was ready; it said", args[[1L]])
  wait <- getOption("hako.start_timeout", 120)
  deadline <- Sys.time() + wait
  while (!file.exists(link_file)) {
    progress_poll(pr)
    if (!pid_alive(pid)) stop_startup(pid, log, what)
    if (Sys.time() > deadline) {
      tools::pskill(pid, tools::SIGKILL)
      stop_startup(pid, log, sprintf("`hako %s` did not start within %s s; its log says", args[[1L]], wait))
    }
    Sys.sleep(0.02)
  }
  ready <- parse_kv(readLines(link_file, warn = FALSE))
  addr <- strsplit(ready[["link"]], ":", fixed = TRUE)[[1L]]
  # Refused when the child stopped right after writing the link file (its
  # local daemons could not start): its log says why, R's socket error not.
  con <- tryCatch(suppressWarnings(socketConnection(addr[[1L]], as.integer(addr[[2L]]), open = "a+b",
                                                    blocking = FALSE, timeout = 60)),
                  error = function(e) NULL)
  if (is.null(con)) stop_startup(pid, log, what)
  p <- new_link(name, con)
  p$pid <- pid
  p$dir <- dir
  p$log <- log
  send_frame(p, T_HELLO, c(charToRaw("HAKO"), u32(LINK_VERSION), charToRaw(ready[["link_token"]])))
  while (is.null(p$ready)) {
    poll(p, 0.2)
    progress_poll(pr)
    if (!p$alive) stop_startup(pid, log, what)
    if (Sys.time() > deadline) {
      link_close(p)
      stop(sprintf("hako: no READY from `hako %s`: %s\n%s", args[[1L]],
                   paste(p$notices, collapse = "; "), log_tail(log)), call. = FALSE)
    }
  }
  p$max_payload <- as.numeric(p$ready[["max_payload"]])
  nloc <- suppressWarnings(as.integer(p$ready[["local"]]))
  if (length(nloc) && !is.na(nloc) && nloc > 0L) wait_local(p, pr, nloc, what)
  p
}

# Waits until the host's `n` local daemons are up: at once from the cache,
# a minute or two on a first start, whose steps `pr` shows. Gives up after
# `hako.start_timeout` seconds without news from the host.
wait_local <- function(p, pr, n, what) {
  stall <- getOption("hako.start_timeout", 120)
  repeat {
    cn <- tryCatch(query_info(p)$counters[["connections"]], error = function(e) NA_integer_)
    if (!p$alive || is.na(cn)) {
      link_close(p)
      stop_startup(p$pid, p$log, what)
    }
    if (cn >= n) {
      progress_poll(pr) # the host's last word ("R is ready ...") came before its daemons
      return(invisible())
    }
    if (!progress_poll(pr) && difftime(Sys.time(), pr$seen, units = "secs") > stall) {
      link_close(p)
      stop(sprintf("hako: the host's %d local daemon(s) did not start and it said nothing for %s s; its log says:\n%s",
                   n, stall, log_tail(p$log)), call. = FALSE)
    }
    Sys.sleep(0.05)
  }
}

# A link's state (the compute profile's environment) over connection `con`:
# the read buffer, the tasks and map batches waiting for results, the
# acknowledgements and notices received. Any binary connection will do, so
# the framing can be tested over a rawConnection().
new_link <- function(name, con) {
  p <- new.env(parent = emptyenv())
  p$name <- name
  p$con <- con
  p$alive <- TRUE
  p$buf <- raw()
  p$pos <- 1L
  p$chunks <- list()
  p$nchunk <- 0L
  p$next_id <- 0L
  p$pending <- new.env(parent = emptyenv())
  p$dead <- 0L
  p$batches <- list()
  p$acks <- new.env(parent = emptyenv())
  p$info <- NULL
  p$notices <- character()
  p$output <- TRUE
  p$launched <- integer()
  p
}

stop_dead <- function(p) {
  stop(sprintf("hako: the daemons of compute profile '%s' are gone (%s); call daemons(0, .compute = \"%s\") and set them up again",
               p$name, if (is.null(p$why)) "host exited" else p$why, p$name), call. = FALSE)
}

# The host is gone: every task still waiting resolves to errorValue 19.
mark_dead <- function(p, why) {
  if (!p$alive) return(invisible())
  p$alive <- FALSE
  p$why <- why
  try(close(p$con), silent = TRUE)
  fail_all(p, why)
  invisible()
}

fail_all <- function(p, why) {
  v <- mk_error_value(19L, why)
  waiting <- as.list(p$pending, all.names = TRUE)
  p$pending <- new.env(parent = emptyenv())
  p$dead <- 0L
  for (t in waiting) if (!is.null(t)) resolve(t, v)
  for (bt in p$batches) {
    idx <- which(!bt$done_flags)
    bt$vals[idx] <- list(v)
    bt$done_flags[idx] <- TRUE
    bt$ndone <- bt$n
  }
  p$batches <- list()
}

link_close <- function(p) {
  if (p$alive) {
    try(writeBin(frame(T_SHUTDOWN, raw()), p$con), silent = TRUE)
    mark_dead(p, "daemons were reset")
  }
  for (pid in p$launched) if (pid_alive(pid)) try(tools::pskill(pid, tools::SIGTERM), silent = TRUE)
  # launch_remote()'s clean-ups (cancelling batch jobs: see engines.R)
  for (f in p$on_close) try(f(), silent = TRUE)
  p$on_close <- NULL
  invisible()
}

new_id <- function(p, n = 1L) {
  if (p$next_id + n >= .Machine$integer.max) p$next_id <- 0L
  lo <- p$next_id + 1L
  p$next_id <- p$next_id + as.integer(n)
  lo
}

