# Launch configurations for engines people already run: SSH and cluster
# schedulers (Slurm's sbatch first). launch_remote(remote = ) starts the
# daemons through them. The join token never appears on a command line,
# here or there: ssh carries it on its standard input, read by the remote
# shell into HAKO_TOKEN; a scheduler carries it in the job's environment.

#' SSH launch configuration
#'
#' For [launch_remote()]`(remote = )`: starts `hako daemon` on other machines
#' over `ssh`, with key-based authentication already in place (as in mirai,
#' ssh is never asked for a password: `BatchMode=yes`). The daemon dials the
#' host's URL and pins its certificate's fingerprint, both on its command
#' line; the join token travels on ssh's standard input, which the remote
#' shell reads into the environment variable `HAKO_TOKEN` before it starts
#' the daemon, so no process list (`ps`) here or there shows it. The daemon
#' runs in the foreground of its ssh session, whose output (the daemon's
#' log) is written to a file of this session (see the `logs` attribute of
#' [launch_remote()]'s value); with `--autoexit` (the default) it leaves when
#' the host goes, which ends its ssh session.
#'
#' @section SSH tunnelling:
#' With `tunnel = TRUE` the remote machine need not reach the host: ssh
#' forwards port `P` of the remote's `127.0.0.1` back to the host's
#' listening address (`-R 127.0.0.1:P:ADDR:P`), and daemons dial
#' `wss://127.0.0.1:P` there. The host must listen on a loopback address,
#' e.g. `daemons(url = host_url(host = "127.0.0.1"))`, and port `P` must be
#' free on the remote.
#'
#' @param remotes `ssh://[user@]host[:port]` URLs (port 22 by default). With
#'   one remote, [launch_remote()] starts `n` daemons there; with several,
#'   one on each.
#' @param tunnel Use a reverse SSH tunnel (see below).
#' @param timeout Longest wait for each SSH connection, in seconds as in
#'   mirai (ssh's `ConnectTimeout`; unlike hako's task durations, which are
#'   milliseconds).
#' @param command The ssh client (default `"ssh"`).
#' @param args Further ssh options, e.g. `c("-i", "~/.ssh/lab_key", "-o",
#'   "StrictHostKeyChecking=accept-new")`.
#' @param hako The `hako` binary on the remote machines: `NULL` is this
#'   session's binary for a remote on a loopback address (this machine),
#'   else `hako` from the remote's `PATH`. [launch_remote()]'s `command`,
#'   when given, takes precedence.
#' @param rscript Not supported (an R error): a hako daemon needs no R on
#'   the remote machine; give its binary with `hako = `.
#' @return A 'hakoRemote' launch configuration for [launch_remote()].
#' @seealso [cluster_config()]
#' @examples
#' ssh_config(c("ssh://lab1", "ssh://me@lab2:2222"), timeout = 5)
#' \dontrun{
#' daemons(url = host_url())
#' launch_remote(2, remote = ssh_config("ssh://lab1", args = c("-i", "~/.ssh/lab")))
#' hako_map(1:4, sqrt)[.flat]
#' daemons(0)
#' }
#' @export
ssh_config <- function(remotes, tunnel = FALSE, timeout = 10, command = "ssh", args = character(), hako = NULL,
                       rscript = NULL) {
  if (!is.null(rscript)) {
    refuse_arg("ssh_config", "rscript = ", "a hako daemon needs no R on the remote machine; give the path of its hako binary with hako = ")
  }
  if (!is.character(remotes) || !length(remotes) || anyNA(remotes)) {
    stop("hako: 'remotes' must be ssh://[user@]host[:port] URLs", call. = FALSE)
  }
  if (!isTRUE(tunnel) && !isFALSE(tunnel)) stop("hako: 'tunnel' must be TRUE or FALSE", call. = FALSE)
  if (!is.numeric(timeout) || length(timeout) != 1L || is.na(timeout) || timeout < 1) {
    stop("hako: ssh_config(timeout = ) is in seconds (ssh's ConnectTimeout), at least 1", call. = FALSE)
  }
  check_word(command, "command", "the ssh client")
  if (!is.character(args) || anyNA(args)) stop("hako: ssh_config(args = ) must be a character vector of ssh options", call. = FALSE)
  if (!is.null(hako)) check_word(hako, "hako", "the path of the hako binary on the remote machines")
  structure(list(type = "ssh", remotes = lapply(remotes, parse_ssh_url), tunnel = isTRUE(tunnel),
                 timeout = as.integer(ceiling(timeout)), command = command, args = args, hako = hako),
            class = "hakoRemote")
}

#' Cluster launch configuration
#'
#' For [launch_remote()]`(remote = )`: submits one batch job per daemon to a
#' cluster's resource manager: Slurm's `sbatch` (tested here against a real
#' Slurm), or the same script with `qsub` (SGE, Torque/PBS, with `-V`) or
#' `bsub` (LSF). The job script (kept in this compute profile's private
#' directory) holds `options` and the `hako daemon` command with the host's
#' URL and fingerprint; the join token is never in it: it travels in the
#' job's environment (`sbatch --export=ALL`, `qsub -V`, LSF's default),
#' which the scheduler keeps readable only by you and its administrators.
#' The daemons have `--autoexit`, so they leave when the host goes, and
#' `daemons(0)` cancels the jobs (`scancel`, `qdel`, `bkill`), including
#' those still queued. (A job still queued when this session ends without
#' `daemons(0)` starts later and exits at once: its host is gone.)
#'
#' @param command The submission command: `"sbatch"` (Slurm), `"qsub"` or
#'   `"bsub"` (its basename says which).
#' @param options Lines of the job script before the daemon starts,
#'   newline-separated, as in mirai: directives such as `"#SBATCH
#'   --mem=2G"` (a daemon's sandbox takes `memory` MiB, 1024 by default) and
#'   shell commands such as `"module load hako"`. No shebang needed.
#' @param hako The `hako` binary on the cluster's nodes: `NULL` is this
#'   session's binary for a host on a loopback address (a single-node
#'   cluster on this machine), else `hako` from the job's `PATH`.
#'   [launch_remote()]'s `command`, when given, takes precedence.
#' @param rscript Not supported (an R error): a hako daemon needs no R on
#'   the nodes; give its binary with `hako = `.
#' @return A 'hakoRemote' launch configuration for [launch_remote()].
#' @seealso [ssh_config()]
#' @examples
#' cluster_config(options = "#SBATCH --job-name=hako
#'                           #SBATCH --mem=2G
#'                           #SBATCH --time=01:00:00")
#' \dontrun{
#' daemons(url = host_url())
#' launch_remote(4, remote = cluster_config(options = "#SBATCH --mem=2G"))
#' hako_map(1:100, sqrt)[.flat]
#' daemons(0)
#' }
#' @export
cluster_config <- function(command = "sbatch", options = "", hako = NULL, rscript = NULL) {
  if (!is.null(rscript)) {
    refuse_arg("cluster_config", "rscript = ", "a hako daemon needs no R on the cluster's nodes; give the path of its hako binary with hako = ")
  }
  check_word(command, "command", "the submission command (sbatch, qsub or bsub)")
  kind <- SCHEDULERS[[basename(command)]]
  if (is.null(kind)) {
    stop(sprintf("hako: cluster_config(command = \"%s\") is not supported: use sbatch (Slurm), qsub (SGE, Torque/PBS) or bsub (LSF)", command),
         call. = FALSE)
  }
  if (!is.character(options) || anyNA(options)) stop("hako: cluster_config(options = ) must be text", call. = FALSE)
  lines <- unlist(strsplit(paste(options, collapse = "\n"), "\n", fixed = TRUE))
  lines <- sub("^[ \t]+", "", lines)
  lines <- lines[nzchar(lines) & !startsWith(lines, "#!")]
  if (any(grepl("HAKO_TOKEN", lines, fixed = TRUE))) {
    stop("hako: cluster_config(options = ) must not set HAKO_TOKEN: launch_remote() passes the join token in the job's environment", call. = FALSE)
  }
  if (!is.null(hako)) check_word(hako, "hako", "the path of the hako binary on the cluster's nodes")
  structure(list(type = "cluster", command = command, scheduler = kind, options = lines, hako = hako),
            class = "hakoRemote")
}

# What each scheduler needs: the flag that hands the submitter's
# environment (and so the token) to the job, and how to cancel a job.
SCHEDULERS <- list(
  sbatch = list(name = "slurm", export = "--export=ALL", cancel = "scancel"),
  qsub = list(name = "qsub", export = "-V", cancel = "qdel"),
  bsub = list(name = "lsf", export = character(), cancel = "bkill")
)

#' @export
print.hakoRemote <- function(x, ...) {
  if (x$type == "ssh") {
    cat(sprintf("hako SSH launch configuration%s: %s\n", if (x$tunnel) " (reverse tunnel)" else "",
                paste(vapply(x$remotes, `[[`, "", "url"), collapse = ", ")))
  } else {
    cat(sprintf("hako cluster launch configuration: %s\n", x$command))
    if (length(x$options)) cat(paste0("  ", x$options), sep = "\n")
  }
  invisible(x)
}

check_word <- function(x, what, means) {
  if (!is.character(x) || length(x) != 1L || is.na(x) || !nzchar(x)) {
    stop(sprintf("hako: '%s' must be %s", what, means), call. = FALSE)
  }
}

parse_ssh_url <- function(url) {
  m <- regmatches(url, regexec("^ssh://(([^@/]+)@)?([^@:/]+|\\[[^]]+\\])(:([0-9]+))?/?$", url))[[1L]]
  if (!length(m)) stop(sprintf("hako: '%s' is not an ssh://[user@]host[:port] URL", url), call. = FALSE)
  host <- m[[4L]]
  list(url = url, dest = if (nzchar(m[[3L]])) paste0(m[[3L]], "@", sub("^\\[(.*)\\]$", "\\1", host)) else sub("^\\[(.*)\\]$", "\\1", host),
       port = if (nzchar(m[[6L]])) as.integer(m[[6L]]) else 22L, loopback = is_loopback(host))
}

# launch_remote(remote = ): start the daemons through the configuration.
launch_with <- function(remote, n, p, extra, command) {
  if (!inherits(remote, "hakoRemote")) {
    refuse_arg("launch_remote", "remote = ", "hako launches daemons with ssh_config() or cluster_config(); without remote = , launch_remote() returns the commands to run by hand")
  }
  if (!is.numeric(n) || length(n) != 1L || is.na(n) || n < 1) stop("hako: 'n' must be a positive number", call. = FALSE)
  n <- as.integer(n)
  if (remote$type == "ssh") launch_ssh(remote, n, p, extra, command) else launch_cluster(remote, n, p, extra, command)
}

# The join token in a file private to this session (0600, in the profile's
# 0700 directory): ssh reads it as its standard input.
token_file <- function(p) {
  f <- file.path(p$dir, "join-token")
  if (!file.exists(f)) {
    old <- Sys.umask("077")
    on.exit(Sys.umask(old))
    writeLines(p$ready[["token"]], f)
    Sys.chmod(f, "0600")
  }
  f
}

# The next daemon number of this profile for a launcher (names ssh-1,
# slurm-1, ...: the host shows them).
next_names <- function(p, kind, n) {
  key <- paste0("launched_", kind)
  k <- if (is.null(p[[key]])) 0L else p[[key]]
  assign(key, k + n, envir = p)
  sprintf("%s-%d", kind, k + seq_len(n))
}

with_name <- function(extra, name) if ("--name" %in% extra) extra else c(extra, "--name", name)

launch_ssh <- function(cfg, n, p, extra, command) {
  r <- p$ready
  u <- parse_url(r[["url"]])
  targets <- cfg$remotes
  if (length(targets) > 1L) {
    if (n != 1L && n != length(targets)) {
      stop("hako: with several remotes, launch_remote() starts one daemon on each: 'n' must be 1 or their number", call. = FALSE)
    }
  } else {
    targets <- rep(targets, n)
  }
  url <- r[["url"]]
  fwd <- character()
  if (cfg$tunnel) {
    if (!is_loopback(u$host)) {
      stop("hako: ssh_config(tunnel = TRUE) needs a host listening on a loopback address: daemons(url = host_url(host = \"127.0.0.1\"))",
           call. = FALSE)
    }
    url <- sprintf("wss://127.0.0.1:%d", u$port)
    fwd <- c("-R", sprintf("127.0.0.1:%d:%s:%d", u$port, sub("^\\[(.*)\\]$", "\\1", u$host), u$port), "-o", "ExitOnForwardFailure=yes")
  } else if (is_loopback(u$host) && !all(vapply(targets, `[[`, NA, "loopback"))) {
    stop(sprintf("hako: the host listens on %s, which other machines cannot dial: use daemons(url = host_url()) or ssh_config(tunnel = TRUE)", u$host),
         call. = FALSE)
  }
  tf <- token_file(p)
  names <- next_names(p, "ssh", length(targets))
  setsid <- Sys.which("setsid")
  lines <- character()
  pids <- integer()
  logs <- character()
  for (i in seq_along(targets)) {
    t <- targets[[i]]
    bin <- if (!is.null(command)) command else if (!is.null(cfg$hako)) cfg$hako else if (t$loopback) hako_binary() else "hako"
    words <- daemon_words(r, with_name(extra, names[[i]]), bin, url)
    # Runs in sh whatever the remote login shell: it reads the token from
    # ssh's standard input into the environment, checks the binary, says
    # so (STARTED: launch_remote() waits for it) and becomes the daemon.
    remote_cmd <- paste("sh -c", shQuote(sprintf(
      "read -r HAKO_TOKEN || exit 1; export HAKO_TOKEN; command -v %s >/dev/null || { echo \"hako: no %s on $(uname -n): give ssh_config(hako = ) its path there\" >&2; exit 127; }; echo \"%s $(uname -n)\" >&2; exec %s",
      sh_word(bin), gsub("[\"`$\\]", "", bin), SSH_STARTED, paste(vapply(words, sh_word, ""), collapse = " "))))
    argv <- c(cfg$args, "-o", "BatchMode=yes", "-o", paste0("ConnectTimeout=", cfg$timeout), "-T",
              "-p", t$port, fwd, t$dest, remote_cmd)
    log <- file.path(p$dir, paste0(names[[i]], ".log"))
    line <- paste(c(shQuote(cfg$command), vapply(argv, shQuote, "")), collapse = " ")
    # Its own session: Ctrl-C in this R session does not end it.
    sh <- sprintf("%s%s <%s >>%s 2>&1 & echo $!", if (nzchar(setsid)) paste0(shQuote(setsid), " ") else "", line,
                  shQuote(tf), shQuote(log))
    out <- suppressWarnings(system2("/bin/sh", c("-c", shQuote(sh)), stdout = TRUE, stderr = FALSE))
    pid <- suppressWarnings(as.integer(out[length(out)]))
    if (!length(pid) || is.na(pid)) stop("hako: could not start ", cfg$command, call. = FALSE)
    pids <- c(pids, pid)
    logs <- c(logs, log)
    lines <- c(lines, paste(c(sh_word(cfg$command), vapply(argv, sh_word, "")), collapse = " "))
  }
  p$launched <- c(p$launched, pids)
  ssh_wait(pids, logs, targets, cfg$timeout + 5)
  structure(lines, note = sprintf("started over ssh, the join token on ssh's standard input; logs in %s", p$dir),
            pids = pids, logs = logs, class = "hakoCommands")
}

# What the remote shell says once ssh got in and found the binary.
SSH_STARTED <- "hako: starting a daemon on"

# Waits (at most `wait` seconds) until each ssh got in and its remote shell
# started the daemon; an ssh that ends first (authentication refused, no
# binary there) is an R error in ssh's and the shell's own words. The
# daemons dial on their own afterwards (a first start on a machine fetches
# webR: minutes), so this does not wait for them to join.
ssh_wait <- function(pids, logs, targets, wait) {
  started <- function(log) any(startsWith(readLines(log, warn = FALSE), SSH_STARTED))
  deadline <- Sys.time() + wait
  todo <- seq_along(pids)
  while (length(todo) && Sys.time() < deadline) {
    for (i in todo) {
      if (file.exists(logs[[i]]) && started(logs[[i]])) {
        todo <- setdiff(todo, i)
      } else if (!pid_alive(pids[[i]]) || is_zombie(pids[[i]])) {
        stop(sprintf("hako: ssh to %s ended before the daemon started; it said:\n%s", targets[[i]]$url,
                     log_tail(logs[[i]])), call. = FALSE)
      }
    }
    if (length(todo)) Sys.sleep(0.05)
  }
  invisible()
}

# A child that has ended but not been reaped yet (R reaps its background
# children only now and then).
is_zombie <- function(pid) {
  st <- suppressWarnings(system2("ps", c("-o", "stat=", "-p", pid), stdout = TRUE, stderr = FALSE))
  length(st) > 0L && startsWith(trimws(st[[1L]]), "Z")
}

launch_cluster <- function(cfg, n, p, extra, command) {
  r <- p$ready
  s <- cfg$scheduler
  here <- is_loopback(parse_url(r[["url"]])$host)
  bin <- if (!is.null(command)) command else if (!is.null(cfg$hako)) cfg$hako else if (here) hako_binary() else "hako"
  names <- next_names(p, s$name, n)
  lines <- character()
  jobs <- character()
  for (i in seq_len(n)) {
    words <- daemon_words(r, with_name(extra, names[[i]]), bin)
    script <- file.path(p$dir, paste0(names[[i]], ".sh"))
    writeLines(c("#!/bin/sh", cfg$options, paste("exec", paste(vapply(words, sh_word, ""), collapse = " "))), script)
    out <- with_envvars(list(HAKO_TOKEN = r[["token"]]),
                        suppressWarnings(system2(cfg$command, s$export, stdin = script, stdout = TRUE, stderr = TRUE)))
    st <- attr(out, "status")
    id <- regmatches(out, regexpr("[0-9]+", out))
    if (!is.null(st) && st != 0L || !length(id)) {
      stop(sprintf("hako: %s could not submit the daemon's job (%s):\n%s", cfg$command,
                   if (is.null(st)) "no job id in its output" else paste("exit status", st),
                   paste(out, collapse = "\n")), call. = FALSE)
    }
    jobs <- c(jobs, id[[1L]])
    lines <- c(lines, sprintf("%s < %s (job %s)", paste(c(cfg$command, s$export), collapse = " "), script, id[[1L]]))
    cancel_on_reset(p, s$cancel, id[[1L]])
  }
  structure(lines, note = "submitted, the join token in each job's environment; daemons(0) cancels the jobs",
            jobs = jobs, class = "hakoCommands")
}

# daemons(0) (link_close()) runs these: the scheduler forgets the jobs, the
# queued ones included (a running daemon leaves with the host anyway).
cancel_on_reset <- function(p, cancel, id) {
  p$on_close <- c(p$on_close, list(function() {
    suppressWarnings(system2(cancel, id, stdout = FALSE, stderr = FALSE))
  }))
}

# daemons(n, url = , remote = ): mirai's way to launch remote daemons with
# the host; a launch that fails resets the profile it had just set.
launch_daemons_remote <- function(n, remote, .compute) {
  tryCatch(launch_remote(n, remote = remote, .compute = .compute), error = function(e) {
    reset_profile(.compute)
    stop(e)
  })
}
