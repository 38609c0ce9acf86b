# The processes the package starts, seen from outside: an R session in a
# process group of its own (as under a terminal) is sent signals, killed or
# left without daemons(0), and the hako processes it started are watched.

rscript <- function() file.path(R.home("bin"), "Rscript")

# Runs `lines` in a new Rscript that leads its own session and process
# group (setsid), as an interactive R does under a terminal; returns the
# directory the script writes to. The script finds it as `dir`.
start_session <- function(lines) {
  dir <- tempfile("hako-proc-")
  dir.create(dir)
  script <- file.path(dir, "script.R")
  writeLines(c(
    sprintf("dir <- %s", deparse(dir)),
    "writeLines(as.character(Sys.getpid()), file.path(dir, 'pid.tmp'))",
    "file.rename(file.path(dir, 'pid.tmp'), file.path(dir, 'pid'))",
    "suppressPackageStartupMessages(library(hako))",
    lines
  ), script)
  system2("setsid", c(shQuote(rscript()), "--vanilla", shQuote(script)),
          stdout = file.path(dir, "log"), stderr = file.path(dir, "log"), wait = FALSE)
  dir
}

# Waits until the session wrote `file` (a line per value), failing with the
# session's log if it does not within `wait` seconds.
await_file <- function(dir, file, wait = 120) {
  path <- file.path(dir, file)
  deadline <- Sys.time() + wait
  while (!file.exists(path)) {
    if (Sys.time() > deadline) {
      log <- file.path(dir, "log")
      fail(paste0("no '", file, "' from the R session; its log:\n",
                  if (file.exists(log)) paste(readLines(log), collapse = "\n") else ""))
    }
    Sys.sleep(0.1)
  }
  readLines(path)
}

# A live process (a zombie waiting for its reaper counts as gone).
proc_alive <- function(pid) {
  st <- suppressWarnings(system2("ps", c("-o", "stat=", "-p", pid), stdout = TRUE, stderr = FALSE))
  length(st) > 0L && nzchar(trimws(st[[1L]])) && !startsWith(trimws(st[[1L]]), "Z")
}

# Waits up to `wait` seconds for every pid to be gone; returns those left.
wait_gone <- function(pids, wait = 15) {
  deadline <- Sys.time() + wait
  repeat {
    left <- pids[vapply(pids, proc_alive, NA)]
    if (!length(left) || Sys.time() > deadline) return(left)
    Sys.sleep(0.2)
  }
}

skip_without_setsid <- function() {
  skip_on_os("windows")
  skip_if(!nzchar(Sys.which("setsid")), "no setsid(1) to give the R session its own process group")
}

test_that("Ctrl-C (SIGINT to the session's process group) stops the wait, not the host", {
  skip_without_setsid()
  dir <- start_session(c(
    "daemons(1)",
    "x <- hako({ Sys.sleep(4); 42 })",
    "writeLines('waiting', file.path(dir, 'waiting'))",
    "r <- tryCatch(x[], interrupt = function(e) 'interrupted')",
    "writeLines(format(r), file.path(dir, 'first'))",
    "y <- hako(1 + 1)[]",
    "writeLines(c(format(y), format(x[])), file.path(dir, 'after'))",
    "daemons(0)"
  ))
  pid <- as.integer(await_file(dir, "pid"))
  on.exit(tools::pskill(pid, tools::SIGKILL), add = TRUE)
  await_file(dir, "waiting")
  Sys.sleep(1) # let R enter x[]
  # the whole group, as a terminal's Ctrl-C does
  system2("kill", c("-INT", paste0("-", pid)))
  expect_equal(await_file(dir, "first"), "interrupted")
  # the host lives on: a new task works, and the interrupted one went on
  expect_equal(await_file(dir, "after"), c("2", "42"))
})

# An R session with a listening host and a daemon of launch_local(); `end`
# is how the session ends. Returns the pids of its host and daemon.
orphan_session <- function(end) {
  dir <- start_session(c(
    "daemons(url = host_url(host = '127.0.0.1'))",
    "p <- hako:::get_profile()",
    "pids <- c(p$pid, launch_local(1))",
    "hako:::wait_connections(p, 1)",
    "stopifnot(hako(1 + 1)[] == 2)",
    "writeLines(as.character(pids), file.path(dir, 'pids'))",
    end
  ))
  list(dir = dir, r = as.integer(await_file(dir, "pid")), hako = as.integer(await_file(dir, "pids")))
}

test_that("an R session killed with -9 leaves no host or daemon behind", {
  skip_without_setsid()
  s <- orphan_session("Sys.sleep(300)")
  on.exit(for (pid in c(s$r, s$hako)) tools::pskill(pid, tools::SIGKILL), add = TRUE)
  expect_length(s$hako, 2L)
  expect_true(all(vapply(s$hako, proc_alive, NA)))
  tools::pskill(s$r, tools::SIGKILL)
  expect_equal(wait_gone(s$hako), integer())
})

test_that("an R session that exits without daemons(0) leaves no host or daemon behind", {
  skip_without_setsid()
  s <- orphan_session("q('no')")
  on.exit(for (pid in s$hako) tools::pskill(pid, tools::SIGKILL), add = TRUE)
  expect_length(s$hako, 2L)
  expect_equal(wait_gone(c(s$r, s$hako)), integer())
})

test_that("a killed R session takes its host along even when another child holds its link", {
  skip_without_setsid()
  # a process the user started from R inherits R's descriptors, the link
  # socket among them: the host never sees the link close
  s <- orphan_session(c("system('sleep 60 &')", "Sys.sleep(300)"))
  on.exit(for (pid in c(s$r, s$hako)) tools::pskill(pid, tools::SIGKILL), add = TRUE)
  expect_true(all(vapply(s$hako, proc_alive, NA)))
  tools::pskill(s$r, tools::SIGKILL)
  expect_equal(wait_gone(s$hako), integer())
})

test_that("with_envvars() sets variables only around its code and restores them, also after an error", {
  we <- hako:::with_envvars
  Sys.setenv(HAKO_T_SET = "before")
  Sys.unsetenv("HAKO_T_UNSET")
  on.exit(Sys.unsetenv(c("HAKO_T_SET", "HAKO_T_UNSET")))
  seen <- we(list(HAKO_T_SET = "a", HAKO_T_UNSET = "b"), Sys.getenv(c("HAKO_T_SET", "HAKO_T_UNSET")))
  expect_identical(unname(seen), c("a", "b"))
  expect_identical(Sys.getenv("HAKO_T_SET"), "before")
  expect_true(is.na(Sys.getenv("HAKO_T_UNSET", unset = NA)))
  expect_error(we(c(HAKO_T_UNSET = "c"), stop("boom")), "boom")
  expect_true(is.na(Sys.getenv("HAKO_T_UNSET", unset = NA)))
  expect_identical(we(character(), 42), 42)
})
