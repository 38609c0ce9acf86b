# everywhere(): runs once per daemon, its state stays through the resets
# after tasks (a task's own does not), each daemon's outcome comes back as a
# 'hako_map' as in mirai, and failures are R errors, not a silent count.

test_that("everywhere() returns each daemon's outcome as a hako_map", {
  on.exit(reset_all())
  daemons(2)
  m <- everywhere(z <<- 10)
  expect_s3_class(m, "hako_map")
  expect_equal(m[], list(10, 10))
  expect_equal(m[.flat], c(10, 10))
  expect_false(unresolved(m))
  expect_output(print(m), "< hako map \\[2/2\\] >")
  expect_equal(everywhere("just a normal operation")[.flat], rep("just a normal operation", 2))
  expect_equal(hako_map(1:2, function(i) z + i)[.flat], c(11, 12))
})

test_that("everywhere() errors are raised, per daemon, and what ran before the error stays", {
  on.exit(reset_all())
  daemons(2)
  err <- tryCatch(everywhere(stop("nope")), error = identity)
  expect_s3_class(err, "hakoEverywhereError")
  expect_match(conditionMessage(err), "everywhere() failed on 2 of 2 daemons: nope", fixed = TRUE)
  res <- err$results[]
  expect_length(res, 2L)
  expect_true(all(vapply(res, is_hako_error, NA)))
  expect_equal(res[[1]]$message, "nope")
  expect_error(everywhere(library(NoSuchPackage)), "no package called")
  # as in mirai, the side effects up to the error are kept
  expect_error(everywhere({ before <<- 5; stop("late") }), "late", class = "hakoEverywhereError")
  expect_equal(hako_map(1:2, function(i) before + i)[.flat], c(6, 7))
})

test_that("everywhere() state survives the reset after a task; a task's own globals do not", {
  on.exit(reset_all())
  daemons(1)
  everywhere({ kept <- 1; library(stats4) })
  expect_equal(hako({ mine <<- 2; kept <<- 0; kept })[], 0)
  for (i in 1:3) {
    expect_equal(hako(c(exists("mine"), kept, "package:stats4" %in% search()))[], c(0, 1, 1))
  }
  # a task that ends R: the sandbox is rebuilt from the same state
  expect_s3_class(suppressWarnings(hako(quit(status = 1))[]), "hakoError")
  expect_equal(hako(kept)[], 1)
})

test_that("everywhere() runs after the task a daemon runs now and before tasks sent after it", {
  on.exit(reset_all())
  daemons(1)
  busy <- hako({ Sys.sleep(1); exists("late") })
  everywhere(late <<- 3)
  expect_false(busy[])
  expect_equal(hako(late)[], 3)
  # a daemon still busy past .timeout is a warning; the code still runs there
  busy <- hako({ Sys.sleep(3); 1 })
  expect_warning(m <- everywhere(w <<- 4, .timeout = 500), "did not report")
  expect_equal(unclass(m[][[1]])[[1]], 5L)
  expect_equal(hako(w)[], 4)
  expect_equal(busy[], 1)
})

test_that("everywhere() takes .args as an environment and .timeout in milliseconds, as every hako duration", {
  on.exit(reset_all())
  daemons(1)
  f <- function() {
    k <- 7
    everywhere(kk <<- k, .args = environment())
  }
  expect_equal(f()[.flat], 7)
  expect_equal(hako(kk)[], 7)
  expect_error(everywhere(NULL, .timeout = -1), "milliseconds")
})

test_that("everywhere() with .args still assigns with `<-` in the global environment", {
  on.exit(reset_all())
  daemons(1)
  everywhere(g2 <- base + 1, .args = list(base = 1))
  expect_equal(hako(g2)[], 2)
  expect_true(is_error_value(hako(base)[]))
})

test_that("everywhere(.min = ) waits for that many daemons, as mirai's synchronization point", {
  on.exit(reset_all())
  daemons(2)
  expect_equal(everywhere(1, .min = 2)[.flat], c(1, 1))
  expect_error(everywhere(1, .min = 3, .timeout = 1500), "only 2 daemons connected")
  expect_error(everywhere(1, .min = 0), "at least 1")
})
