#' Launch daemons for a listening host
#'
#' `launch_local()` starts `n` `hako daemon` processes on this machine that
#' dial the host of a compute profile set with `daemons(url = ...)`.
#' `launch_remote()` returns the commands to run on other machines, printed
#' with what they need there; with `remote = ` [ssh_config()] or
#' [cluster_config()] it starts the daemons itself, over SSH or as batch
#' jobs, the join token on ssh's standard input or in the job's
#' environment, never on a command line.
#'
#' The commands work as printed. For a host listening on a loopback address
#' they are for this machine and name this session's `hako` binary by its
#' absolute path; otherwise they run `hako` from the other machine's `PATH`,
#' unless `command` gives its path there. Each daemon has `--autoexit`: it
#' leaves when this host goes (`daemons(0)`, or this R session ending) rather
#' than dialling a URL where no host will take it again (a new host has a new
#' certificate); pass `autoexit = FALSE` to keep it dialling.
#'
#' @param n Number of daemons.
#' @param ... [daemon()]'s arguments, mirai's names and units: e.g.
#'   `memory = 512` (MiB), `timeout = 60000`, `idletime = 300000`,
#'   `walltime` (milliseconds), `maxtasks = 100`, `cleanup = FALSE`,
#'   `autoexit`. Without any, those given to [daemons()]`(url = , ...)`.
#' @param remote `NULL` (return the commands), or a launch configuration
#'   made by [ssh_config()] or [cluster_config()] (mirai's
#'   `remote_config()` and `http_config()` are not supported: an R error).
#' @param command The `hako` binary on the machines that run the commands
#'   (`NULL`: this session's binary for a loopback host, else `hako` from
#'   their `PATH`).
#' @param .compute Compute profile (`NULL`: default).
#' @return `launch_local()`: invisibly, the process ids of the daemons.
#'   `launch_remote()`: a character vector of `n` shell commands (class
#'   'hakoCommands', printed with a note on where to run them). With
#'   `remote`, the commands that started the daemons (no token in them),
#'   with attributes `pids` and `logs` (SSH: the local ssh processes and the
#'   files their daemons' output goes to) or `jobs` (the scheduler's job
#'   ids).
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
launch_remote <- function(n = 1L, remote = NULL, ..., command = NULL, .compute = NULL) {
  if (!is.null(command) && (!is.character(command) || length(command) != 1L || is.na(command) || !nzchar(command))) {
    stop("hako: 'command' must be the path of the hako binary on the machines that run the commands", call. = FALSE)
  }
  p <- get_profile(.compute)
  r <- p$ready
  if (is.null(r[["token"]]) || is.null(r[["url"]])) {
    stop("hako: this compute profile's host does not listen for daemons: set it with daemons(url = host_url())", call. = FALSE)
  }
  extra <- launch_args("launch_remote", p, list(...), TRUE)
  if (!is.null(remote)) return(launch_with(remote, n, p, extra, command))
  daemon_command_line(r, extra, command, n)
}

# `n` copies of the `hako daemon` command that joins the host of READY
# lines `r`, with the daemon options `extra`, run by `command` (see
# launch_remote()), as a 'hakoCommands' vector carrying where to run it.
daemon_command_line <- function(r, extra = character(), command = NULL, n = 1L) {
  url <- r[["url"]]
  here <- is_loopback(parse_url(url)$host)
  bin <- if (!is.null(command)) command else if (here) hako_binary() else "hako"
  # The token goes in the environment, never in argv, where any user of
  # that machine could read it with ps.
  words <- daemon_words(r, extra, bin)
  line <- paste(c(paste0("HAKO_TOKEN=", sh_word(r[["token"]])), vapply(words, sh_word, "")), collapse = " ")
  where <- if (here) {
    "run on this machine (the host listens on a loopback address)"
  } else if (is.null(command)) {
    "run on each machine that lends its cores; `hako` must be on its PATH there (or give launch_remote(command = \"/path/to/hako\"))"
  } else {
    "run on each machine that lends its cores"
  }
  note <- paste0(where, "; ", if ("--autoexit" %in% extra) "each daemon leaves when this host goes" else
                   "each daemon keeps dialling the URL until a host with this certificate answers")
  structure(rep(line, n), note = note, class = "hakoCommands")
}

# The words of the `hako daemon` command (without the token) that dials
# `url` (the host's, or a tunnel's end) of the host of READY lines `r`.
daemon_words <- function(r, extra, bin, url = r[["url"]]) {
  # A CA-signed host (daemons(tls = )) is checked without a pin.
  pin <- !is.null(r[["daemon_command"]]) && grepl("--fingerprint", r[["daemon_command"]], fixed = TRUE)
  c(bin, "daemon", url, if (pin) c("--fingerprint", r[["fingerprint"]]), extra)
}

#' @export
print.hakoCommands <- function(x, ...) {
  cat("hako daemon command(s): ", attr(x, "note"), ":\n", sep = "")
  cat(paste0("  ", unclass(x)), sep = "\n")
  invisible(x)
}

# Whether a host name or address can only be this machine.
is_loopback <- function(host) {
  host <- sub("^\\[(.*)\\]$", "\\1", host)
  host == "localhost" || grepl("^127\\.", host) || host == "::1"
}

# A word for sh: as it is when it needs no quoting.
sh_word <- function(w) if (grepl("^[A-Za-z0-9_./:=@%+,-]+$", w)) w else shQuote(w)

