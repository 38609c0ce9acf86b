test_that("plan(hako_multisession): values, stdout, conditions, globals, seeds", {
  skip_if_not_installed("future")
  library(future)
  on.exit({ plan(sequential); reset_all() })
  plan(hako::hako_multisession, workers = 2)
  expect_equal(nbrOfWorkers(), 2L)
  f <- future({ cat("hi\n"); message("m1"); warning("w1"); 42 })
  expect_true(inherits(f, "HakoFuture"))
  expect_output(expect_message(expect_warning(v <- value(f), "w1"), "m1"), "hi")
  expect_equal(v, 42)
  a <- 5
  g <- function(x) x + a
  expect_equal(value(future(g(1))), 6)
  expect_error(value(future(stop("boom"))), "boom")
  f2 <- future(Sys.sleep(1))
  expect_false(resolved(f2))
  value(f2)
  expect_true(resolved(f2))
  # a package the sandbox lacks: an error naming it
  expect_error(value(future(testthat::expect_true(TRUE))), "testthat")
  s1 <- value(future(runif(1), seed = 1L))
  s2 <- value(future(runif(1), seed = 1L))
  expect_identical(s1, s2)
  fs <- lapply(1:4, function(i) future(i^2))
  expect_equal(value(fs), list(1, 4, 9, 16))
})

test_that("future.apply and furrr on hako", {
  skip_if_not_installed("future.apply")
  library(future)
  on.exit({ plan(sequential); reset_all() })
  plan(hako::hako_multisession, workers = 2)
  expect_equal(future.apply::future_sapply(1:5, function(i) i^2), (1:5)^2)
  set.seed(1); a <- future.apply::future_sapply(1:3, function(i) runif(1), future.seed = TRUE)
  set.seed(1); b <- future.apply::future_sapply(1:3, function(i) runif(1), future.seed = TRUE)
  expect_identical(a, b)
  if (requireNamespace("furrr", quietly = TRUE)) {
    # furrr's worker code calls purrr, which has compiled code (as do rlang,
    # vctrs and cli under it): there is no WebAssembly build of it to give
    # the sandbox, so the future fails with an error naming it
    expect_error(furrr::future_map_dbl(1:4, ~ .x * 2), "not available in the sandbox: purrr")
  }
})

test_that("plan(hako_cluster) uses the daemons set", {
  skip_if_not_installed("future")
  library(future)
  on.exit({ plan(sequential); reset_all() })
  daemons(2)
  plan(hako::hako_cluster)
  expect_equal(nbrOfWorkers(), 2L)
  expect_equal(value(future(1 + 1)), 2)
  h <- hako(1)
  daemons(0)
  daemons(1, timeout = 200)
  expect_error(value(future(Sys.sleep(10))), "timed out")
})
