# mirai's arguments: each supported with mirai's meaning or refused with an
# R error naming hako's equivalent; never ignored, never the CLI's usage.

no_usage <- function(expr) {
  e <- tryCatch(expr, error = identity)
  expect_s3_class(e, "error")
  expect_false(grepl("Usage:|unexpected argument", conditionMessage(e)))
  conditionMessage(e)
}

lh <- function() host_url(host = "127.0.0.1")

test_that("daemons(): mirai's arguments are supported or refused, naming hako's equivalent", {
  on.exit(reset_all())
  expect_match(no_usage(daemons(2, dispatcher = FALSE)), "dispatcher = FALSE.*first in, first out")
  expect_match(no_usage(daemons(2, sync = TRUE)), "sync = TRUE.*daemons\\(1\\)")
  expect_match(no_usage(daemons(2, serial = list())), "serial")
  expect_match(no_usage(daemons(2, pass = function() "x")), "pass")
  expect_match(no_usage(daemons(2, remote = list(command = "ssh"))), "launch_remote\\(\\)")
  expect_match(no_usage(daemons(2, nonsense = 1)), "no argument 'nonsense'")
  expect_match(no_usage(daemons(2, idle_time = 1)), "is now daemons\\(idletime = \\), in milliseconds")
  # caps of local daemons (in the host's process) point to launch_local()
  expect_match(no_usage(daemons(2, maxtasks = 2)), "launch_local\\(n, idletime")
  expect_match(no_usage(daemons(2, autoexit = FALSE)), "autoexit = FALSE")
  expect_match(no_usage(daemons(1, tls = "nope.pem")), "tls")
  # a client of a remote host sets none of that host's options
  expect_match(no_usage(daemons(url = "wss://127.0.0.1:1", token = "t", memory = 64)), "as a client: 'memory'")
  expect_match(no_usage(daemons(url = "wss://127.0.0.1:1", token = "t", retries = 0)), "as a client: 'retries'")
  # none of those started anything
  expect_null(info())
  # dispatcher = TRUE is hako's only way, accepted
  daemons(2, dispatcher = TRUE)
  expect_equal(info()[["connections"]], 2L)
  daemons(0)
  # cleanup = FALSE keeps state between tasks, as keep_state = TRUE
  daemons(1, cleanup = FALSE)
  hako(x <<- 5)[]
  expect_true(hako(exists("x"))[])
  daemons(0)
  daemons(1)
  hako(x <<- 5)[]
  expect_false(hako(exists("x"))[])
  daemons(0)
  # host options in milliseconds: the host is told seconds
  daemons(1, shutdown_grace = 1500, retries = 0)
  expect_equal(hako(1)[], 1)
  skip_if_not(file.exists("/proc/self/cmdline"))
  argv <- readBin(sprintf("/proc/%d/cmdline", hako:::get_profile()$pid), "raw", 4096)
  argv <- vapply(split(argv, cumsum(argv == 0)), function(r) rawToChar(r[r != 0]), "")
  expect_equal(argv[[match("--shutdown-grace", argv) + 1L]], "1.5")
})

test_that("daemons(url = , idletime, walltime, maxtasks): kept for the launchers, in milliseconds", {
  on.exit(reset_all())
  daemons(url = lh(), idletime = 1500, maxtasks = 3, cleanup = FALSE, .compute = "u")
  cmd <- gsub("'", "", launch_remote(1, .compute = "u"))
  expect_match(cmd, "--idle-time 1.5( |$)")
  expect_match(cmd, "--max-tasks 3( |$)")
  expect_match(cmd, "--keep-state")
  # given to the launcher, they replace those of daemons()
  cmd <- gsub("'", "", launch_remote(1, walltime = 60000, .compute = "u"))
  expect_match(cmd, "--wall-time 60( |$)")
  expect_false(grepl("--max-tasks", cmd))
  expect_match(no_usage(launch_remote(1, remote = list(command = "ssh"), .compute = "u")), "remote")
  expect_match(no_usage(launch_local(1, max_tasks = 1, .compute = "u")), "maxtasks")
  expect_match(no_usage(launch_local(1, bogus = 1, .compute = "u")), "no argument 'bogus'")
  # a launched daemon leaves after maxtasks tasks, as in mirai
  pids <- launch_local(1, maxtasks = 1, .compute = "u")
  expect_equal(hako(6 * 7, .compute = "u")[], 42)
  for (i in 1:200) if (!hako:::pid_alive(pids)) break else Sys.sleep(0.05)
  expect_false(hako:::pid_alive(pids))
})

test_that("daemon(): mirai's names and units (idletime in ms), refusals before anything starts", {
  on.exit(reset_all())
  d <- daemons(url = lh(), .compute = "h")
  u <- d$url
  expect_match(no_usage(daemon(u, token = "t", dispatcher = FALSE)), "dispatcher = FALSE")
  expect_match(no_usage(daemon(u, token = "t", asyncdial = FALSE)), "keeps dialling")
  expect_match(no_usage(daemon(u, token = "t", output = TRUE)), "daemons\\(output = TRUE\\)")
  expect_match(no_usage(daemon(u, token = "t", rs = 1:7)), "daemons\\(seed = \\)")
  expect_match(no_usage(daemon(u, token = "t", autoexit = NA)), "autoexit")
  expect_match(no_usage(daemon(u, token = "t", idle_time = 1)), "daemon\\(idletime = \\)")
  expect_match(no_usage(daemon(u, token = "t", task_timeout = 1)), "daemon\\(timeout = \\)")
  expect_match(no_usage(daemon(u, token = "t", whatever = 1)), "no argument 'whatever'")
  expect_match(no_usage(daemon(u, token = "t", idletime = -1)), "milliseconds")
  expect_match(no_usage(daemon(u, token = "")), "join token")
  m <- hako(6 * 7, .compute = "h")
  # idletime = 60000 was a CLI error in a log; now 800 ms idle, then it leaves
  t0 <- Sys.time()
  st <- daemon(u, token = d$token, fingerprint = d$fingerprint, idletime = 800, log = tempfile())
  expect_equal(st, 0L)
  expect_equal(m[], 42)
})

test_that("host_url(ws = TRUE) and .args = environment()", {
  on.exit(reset_all())
  expect_equal(host_url(ws = TRUE, host = "h", port = 1), "wss://h:1")
  expect_match(no_usage(host_url(ws = FALSE)), "ws = TRUE")
  daemons(1)
  e <- new.env()
  e$a <- 1
  e$b <- 2
  expect_equal(hako(a + b, .args = e)[], 3)
  expect_equal(hako_map(1:2, function(x, k) x * k, .args = list2env(list(k = 10)))[.flat], c(10, 20))
  expect_match(no_usage(hako(1, .args = 1)), "named list or an environment")
})

test_that("hako() without daemons runs in an ephemeral daemon that goes once resolved", {
  on.exit(reset_all())
  expect_null(info())
  m <- hako(sum(x), x = 1:10)
  expect_equal(m[], 55L)
  # its host is gone, and no daemons are set
  expect_equal(grep("ephemeral", ls(hako:::.hako$profiles, all.names = TRUE), value = TRUE), character())
  expect_null(info())
  # errors and timeouts as with daemons
  expect_true(is_hako_error(hako(stop("x"))[]))
  expect_equal(unclass(hako(Sys.sleep(30), .timeout = 200)[])[[1]], 5L)
  # hako_map and everywhere still need daemons, as in mirai
  expect_error(hako_map(1:2, identity), "no daemons")
})

test_that("hako_map(.promise = ) and as.promise() on a map", {
  skip_if_not_installed("promises")
  skip_if_not_installed("later")
  on.exit(reset_all())
  daemons(2)
  got <- list()
  bad <- NULL
  m <- hako_map(list(a = 1, b = "x", c = 3), function(v) v * 2,
                .promise = list(function(v) got[[length(got) + 1L]] <<- v, function(e) bad <<- conditionMessage(e)))
  for (i in 1:300) { later::run_now(0.02); if (length(got) == 2L && !is.null(bad)) break }
  expect_setequal(unlist(got), c(2, 6))
  expect_match(bad, "non-numeric")
  all <- NULL
  promises::then(promises::as.promise(hako_map(1:3, function(i) i + 1)), function(v) all <<- v)
  rej <- NULL
  promises::catch(promises::as.promise(hako_map(list(a = 1, b = "x"), function(v) v + 1)),
                  function(e) rej <<- conditionMessage(e))
  for (i in 1:300) { later::run_now(0.02); if (!is.null(all) && !is.null(rej)) break }
  expect_equal(all, list(2, 3, 4))
  expect_match(rej, "element 2 \\(.b.\\) failed")
  expect_match(no_usage(hako_map(1:2, identity, .promise = 1)), "onFulfilled")
})

test_that("status(cl) and info(cl) on a cluster; make_cluster(url = ) refused", {
  on.exit(reset_all())
  cl <- make_cluster(2, seed = 1)
  on.exit(parallel::stopCluster(cl), add = TRUE)
  expect_equal(status(cl)$connections, 2L)
  expect_equal(nrow(status(cl)$table), 2L)
  parallel::parLapply(cl, 1:4, sqrt)
  # parLapply() sends one chunk per node
  expect_equal(info(cl)[["completed"]], 2L)
  parallel::stopCluster(cl)
  expect_equal(status(cl)$connections, 0L)
  expect_match(no_usage(make_cluster(1, url = lh())), "make_cluster\\(url = \\).*daemons\\(url = host_url\\(\\)\\)")
  expect_match(no_usage(make_cluster(1, remote = list())), "remote")
  expect_match(no_usage(make_cluster(1, bogus = 1)), "no argument 'bogus'")
  expect_match(no_usage(make_cluster(1, cleanup = TRUE)), "keeps its state")
})

test_that("collect_hako() options on lists and mirai's named options; stop_hako() per element", {
  on.exit(reset_all())
  daemons(1)
  expect_equal(collect_hako(list(hako(1), hako(2)), ".flat"), c(1, 2))
  expect_equal(collect_hako(list(a = hako(1), b = hako(2)), list(.progress = "bar", .flat = TRUE)), c(a = 1, b = 2))
  expect_error(collect_hako(list(hako(1)), ".nope"), "unknown hako_map option")
  expect_equal(collect_hako(hako_map(1:2, identity), c(.flat = TRUE, .progress = "bar")), 1:2)
  expect_error(collect_hako(list(a = hako(1), b = hako(stop("no"))), ".stop"), "element 2 \\(.b.\\) failed: no")
  m <- hako_map(1:3, function(i) Sys.sleep(10))
  expect_equal(stop_hako(m), c(TRUE, TRUE, TRUE))
  expect_equal(stop_hako(list(hako(1), hako(Sys.sleep(10))))[[2]], TRUE)
})

test_that("a package the sandbox lacks: the task's error value names how to get it", {
  on.exit(reset_all())
  daemons(1)
  e <- hako(library(nosuchpkg))[]
  expect_true(is_hako_error(e))
  expect_match(e$message, "no package called")
  expect_match(e$message, "daemons\\(packages = c\\(\"nosuchpkg\"\\)\\)")
  expect_match(unclass(e)[[1]], "hint: ")
  skip_if_not_installed("testthat")
  e2 <- hako(f(1), f = testthat::expect_true)[]
  expect_match(e2$message, "not available in the sandbox: testthat.*hint: .*daemons\\(packages")
  skip_if_not_installed("future")
  old <- future::plan(hako::hako_multisession, workers = 1)
  on.exit(future::plan(old), add = TRUE)
  err <- tryCatch(future::value(future::future(library(nosuchpkg))), error = identity)
  expect_match(conditionMessage(err), "plan\\(hako::hako_multisession, packages = c\\(\"nosuchpkg\"\\)\\)")
})

test_that("plan(hako_multisession, workers = ) follows future's rules", {
  skip_if_not_installed("future")
  old <- future::plan()
  on.exit({ future::plan(old); reset_all() })
  future::plan(hako::hako_multisession, workers = function() 1L)
  expect_equal(future::nbrOfWorkers(), 1L)
  expect_equal(future::value(future::future(42L)), 42L)
  for (w in list(0L, NA_integer_, TRUE, NA_character_, "2", 1:2)) {
    expect_error(future::plan(hako::hako_multisession, workers = w))
  }
})

test_that("daemons(url = , tls = ) serves mirai's certificate-and-key PEM", {
  skip_if(!nzchar(Sys.which("openssl")))
  on.exit(reset_all())
  dir <- tempfile()
  dir.create(dir)
  key <- file.path(dir, "key.pem")
  crt <- file.path(dir, "crt.pem")
  st <- system2("openssl", c("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                             "-keyout", key, "-out", crt, "-days", "1", "-subj", "/CN=127.0.0.1",
                             "-addext", "subjectAltName=IP:127.0.0.1"), stdout = FALSE, stderr = FALSE)
  skip_if(st != 0L)
  both <- file.path(dir, "both.pem")
  writeLines(c(readLines(crt), readLines(key)), both)
  fp <- system2("openssl", c("x509", "-in", crt, "-noout", "-fingerprint", "-sha256"), stdout = TRUE)
  fp <- tolower(gsub(":", "", sub(".*=", "", fp)))
  # one file holding both, as mirai takes it
  d <- daemons(url = lh(), tls = both, .compute = "t1")
  expect_equal(d$fingerprint, paste0("SHA256:", fp))
  launch_local(1, .compute = "t1")
  expect_equal(hako(1 + 1, .compute = "t1")[], 2)
  # or c(certificate, key) as PEM text
  d2 <- daemons(url = lh(), tls = c(paste(readLines(crt), collapse = "\n"), paste(readLines(key), collapse = "\n")), .compute = "t2")
  expect_equal(d2$fingerprint, paste0("SHA256:", fp))
  expect_match(no_usage(daemons(1, tls = both, .compute = "t3")), "daemons\\(url = host_url\\(\\), tls = \\)")
})
