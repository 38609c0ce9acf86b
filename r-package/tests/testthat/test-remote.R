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
