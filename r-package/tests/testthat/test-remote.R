lh <- function() host_url(host = "127.0.0.1")

test_that("host_url(), launch_remote() and launch_local() with a listening host", {
  on.exit(reset_all())
  expect_match(host_url(), "^wss://")
  expect_equal(host_url(port = 5555, host = "h"), "wss://h:5555")
  expect_error(host_url(tls = FALSE), "TLS")
  d <- daemons(url = lh(), .compute = "r")
  expect_match(d$daemon_command, "hako daemon wss://127.0.0.1:")
  expect_output(print(d), "launch a daemon with")
  cmd <- launch_remote(2, memory = 512, .compute = "r")
  expect_length(cmd, 2)
  expect_match(cmd[[1]], "--fingerprint")
  expect_match(cmd[[1]], "--memory")
  pids <- launch_local(2, .compute = "r")
  expect_length(pids, 2)
  # both daemons must have joined before the map, or it may finish on one
  for (i in 1:200) if (isTRUE(info(.compute = "r")[["connections"]] == 2L)) break else Sys.sleep(0.05)
  expect_equal(hako_map(1:10, function(i) i * 2, .compute = "r")[.flat], seq(2, 20, 2))
  expect_equal(info(.compute = "r")[["connections"]], 2L)
  expect_match(status(.compute = "r")$daemons, "^wss://")
})

test_that("a daemon killed mid-task: the task is not lost", {
  on.exit(reset_all())
  daemons(url = lh(), .compute = "k")
  pids <- launch_local(2, .compute = "k")
  for (i in 1:200) if (isTRUE(info(.compute = "k")[["connections"]] == 2L)) break else Sys.sleep(0.05)
  ms <- list(hako({ Sys.sleep(1.5); "a" }, .compute = "k"), hako({ Sys.sleep(1.5); "b" }, .compute = "k"))
  for (i in 1:200) if (isTRUE(info(.compute = "k")[["executing"]] == 2L)) break else Sys.sleep(0.05)
  expect_true(tools::pskill(pids[[1]], tools::SIGKILL))
  expect_equal(collect_hako(ms), list("a", "b"))
  expect_equal(info(.compute = "k")[["connections"]], 1L)
})

test_that("daemon() lends this session's machine; a client joins a remote host", {
  on.exit(reset_all())
  d <- daemons(url = lh(), .compute = "h")
  m <- hako(6 * 7, .compute = "h")
  # blocks until it leaves, after a second without a task
  st <- daemon(d$url, token = d$token, fingerprint = d$fingerprint, idletime = 1000, memory = 256, log = tempfile())
  expect_equal(st, 0L)
  expect_equal(m[], 42)
  # a second R link joins the same host as a remote client
  daemons(url = d$url, token = d$client_token, fingerprint = d$fingerprint, .compute = "client")
  launch_local(1, .compute = "h")
  expect_equal(hako(1 + 1, .compute = "client")[], 2)
  expect_error(daemons(url = d$url, token = "wrong", fingerprint = d$fingerprint, .compute = "bad"))
})

# A live process (a zombie waiting for its reaper counts as gone).
alive <- function(pid) {
  st <- suppressWarnings(system2("ps", c("-o", "stat=", "-p", pid), stdout = TRUE, stderr = FALSE))
  length(st) > 0L && nzchar(trimws(st[[1L]])) && !startsWith(trimws(st[[1L]]), "Z")
}

test_that("launch_remote() prints a command that works as printed; its daemon leaves with the host", {
  on.exit(reset_all())
  d <- daemons(url = lh(), .compute = "p")
  cmd <- launch_remote(1, .compute = "p")
  expect_s3_class(cmd, "hakoCommands")
  # a loopback host: the command is for this machine and names the binary
  # (its token in the environment, never in argv where ps shows it)
  expect_true(startsWith(sub("^HAKO_TOKEN=[0-9a-f]{64} ", "", cmd[[1]]),
                         paste(hako:::sh_word(hako_binary()), "daemon wss://127.0.0.1:")))
  expect_false(grepl("--token", cmd[[1]], fixed = TRUE))
  expect_match(cmd[[1]], " --autoexit( |$)")
  expect_output(print(cmd), "run on this machine.*leaves when this host goes")
  expect_output(print(d), "launch a daemon with \\(run on this machine")
  expect_identical(unclass(d$daemon_command), unclass(cmd))
  # run exactly as printed, from a shell whose PATH has no hako of ours
  log <- tempfile()
  pid <- as.integer(system(sprintf("PATH=/usr/bin:/bin %s >%s 2>&1 </dev/null & echo $!", cmd[[1]], shQuote(log)),
                           intern = TRUE))
  for (i in 1:600) if (isTRUE(info(.compute = "p")[["connections"]] == 1L)) break else Sys.sleep(0.05)
  expect_equal(hako(6 * 7, .compute = "p")[], 42)
  daemons(0, .compute = "p")
  for (i in 1:300) if (!alive(pid)) break else Sys.sleep(0.05)
  expect_false(alive(pid), info = paste(readLines(log), collapse = "\n"))
})

test_that("launch_remote(): the binary's path there, or what must be on PATH; autoexit = FALSE keeps dialling", {
  on.exit(reset_all())
  daemons(url = lh(), .compute = "q")
  cmd <- launch_remote(2, command = "/opt/hako tools/hako", .compute = "q")
  expect_length(cmd, 2)
  expect_match(cmd[[2]], "^HAKO_TOKEN=[0-9a-f]{64} '/opt/hako tools/hako' daemon wss://127\\.0\\.0\\.1:[0-9]+ --fingerprint SHA256:[0-9a-f]{64} --autoexit$")
  expect_false(grepl("--token", cmd[[2]], fixed = TRUE))
  kept <- launch_remote(1, autoexit = FALSE, .compute = "q")
  expect_false(grepl("--autoexit", kept[[1]], fixed = TRUE))
  expect_output(print(kept), "keeps dialling")
  expect_error(launch_remote(1, command = "", .compute = "q"), "path of the hako binary")
  # a host other machines dial: `hako` from their PATH, and the print says so
  r <- list(url = "wss://lab.example:7000", token = "t0k", fingerprint = "SHA256:ab",
            daemon_command = "HAKO_TOKEN=t0k hako daemon wss://lab.example:7000 --fingerprint SHA256:ab")
  far <- hako:::daemon_command_line(r, "--autoexit")
  expect_identical(unclass(far)[[1]], "HAKO_TOKEN=t0k hako daemon wss://lab.example:7000 --fingerprint SHA256:ab --autoexit")
  expect_output(print(far), "`hako` must be on its PATH there (or give launch_remote(command = ", fixed = TRUE)
  # a CA-signed host has no pin in its command
  r$daemon_command <- "HAKO_TOKEN=t0k hako daemon wss://lab.example:7000"
  expect_false(grepl("--fingerprint", hako:::daemon_command_line(r)[[1]]))
})
