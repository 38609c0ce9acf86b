# The host's refusals reach the R user with the host's reason: as an error
# value for a task, an R error for everywhere(), a FutureError for a future.

test_that("a result over max_payload is a 'result too large' error value, and the daemon lives on", {
  on.exit(reset_all())
  daemons(1, max_payload = 1)
  v <- hako(raw(3e6))[]
  expect_true(is_hako_error(v))
  expect_s3_class(v, "hakoError")
  expect_true("hakoRejected" %in% v$condition.class)
  expect_match(v$message, "result too large")
  expect_output(print(v), "result too large")
  m <- hako_map(1:2, function(i) if (i == 2) raw(3e6) else i)
  err <- tryCatch(m[.flat], error = conditionMessage)
  expect_match(err, "element 2 failed: result too large")
  expect_equal(hako(1 + 1)[], 2)
})

test_that("a result the host refuses as unsafe is a 'result refused' error value; nothing of it runs here", {
  on.exit(reset_all())
  daemons(1)
  marker <- tempfile()
  v <- hako({
    e <- new.env()
    delayedAssign("x", file.create(m), assign.env = e)
    # the sandbox forces promises before sending, but not a locked binding's
    lockBinding("x", e)
    e
  }, m = marker)[]
  expect_true(is_hako_error(v))
  expect_true("hakoRefused" %in% v$condition.class)
  expect_match(v$message, "^result refused: ")
  expect_output(print(v), "result refused")
  expect_false(file.exists(marker))
  f <- hako({ e <- new.env(); makeActiveBinding("y", function() 1, e); list(e) })[]
  expect_match(f$message, "^result refused: ")
  fn <- function(i) if (i == 2) { e <- new.env(); delayedAssign("z", 1, assign.env = e); lockBinding("z", e); e } else i
  environment(fn) <- globalenv()
  err <- tryCatch(hako_map(1:2, fn)[.stop], error = conditionMessage)
  expect_match(err, "element 2 failed: result refused")
  expect_equal(hako(1 + 1)[], 2)
})

test_that("an everywhere() past the host's bound is an R error with the host's reason", {
  on.exit(reset_all())
  daemons(1, max_everywhere = 1)
  expect_length(everywhere(a <<- length(big), big = raw(6e5))[], 1L)
  expect_error(everywhere(b <<- length(big), big = raw(6e5)), "everywhere\\(\\) refused")
  # what was kept still applies, and the session goes on
  expect_equal(hako(a)[], 6e5)
  expect_error(everywhere(cc <<- 1), NA)
})

test_that("a refused result is a FutureError naming the host's reason", {
  skip_if_not_installed("future")
  on.exit({ future::plan("sequential"); reset_all() })
  daemons(1, max_payload = 1)
  future::plan(hako::hako_cluster)
  f <- future::future(raw(3e6))
  err <- tryCatch(future::value(f), error = identity)
  expect_s3_class(err, "FutureError")
  expect_match(conditionMessage(err), "result too large")
  g <- future::future({ e <- new.env(); delayedAssign("x", 1, assign.env = e); lockBinding("x", e); e })
  err <- tryCatch(future::value(g), error = identity)
  expect_s3_class(err, "FutureError")
  expect_match(conditionMessage(err), "result refused")
  expect_equal(future::value(future::future(1 + 1)), 2)
})

test_that("a task whose daemons die under it twice is a 'crashed its daemon' error value", {
  on.exit(reset_all())
  daemons(url = host_url(host = "127.0.0.1"))
  pids <- launch_local(2)
  names(pids) <- c("local-1", "local-2")
  on.exit(for (pid in pids) tools::pskill(pid, tools::SIGKILL), add = TRUE)
  busy <- function() { t <- status()$table; t$name[!is.na(t$busy_ms)] }
  for (i in 1:400) if (isTRUE(info()[["connections"]] == 2L)) break else Sys.sleep(0.05)
  x <- hako(Sys.sleep(120))
  for (round in 1:2) {
    b <- character()
    for (i in 1:1200) { b <- busy(); if (length(b)) break; Sys.sleep(0.05) }
    expect_length(b, 1L)
    tools::pskill(pids[[b]], tools::SIGKILL)
    for (i in 1:1200) if (!b %in% status()$table$name) break else Sys.sleep(0.05)
  }
  v <- x[]
  expect_true(is_hako_error(v))
  expect_true("hakoCrashed" %in% v$condition.class)
  expect_match(v$message, "crashed its daemon")
  expect_output(print(v), "crashed its daemon")
})
