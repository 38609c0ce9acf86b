# .replicas = k: each task runs on k distinct daemons, which must return the
# same result (real host, real sandboxes; the lying daemon is in the host's
# end-to-end tests, host/tests/e2e/replicas.rs).

runs <- function() sum(status()$table$tasks_done)

test_that("replicas draw the task's own random numbers: the value of one run", {
  on.exit(reset_all())
  daemons(3, seed = 7)
  one <- hako(runif(1))[]
  daemons(0)
  daemons(3, seed = 7)
  two <- hako(runif(1), .replicas = 2)[]
  expect_false(is_error_value(two))
  expect_identical(two, one)
  expect_equal(runs(), 2)
  tab <- status()$table
  expect_true(all(c("failures", "disagreements") %in% names(tab)))
  expect_equal(sum(tab$failures), 0)
  expect_equal(sum(tab$disagreements), 0)
  three <- hako(runif(2), .replicas = 3)[]
  expect_length(three, 2)
  expect_equal(runs(), 5)
})

test_that("maps, chunked or not, are replicated element by element or chunk by chunk", {
  on.exit(reset_all())
  daemons(2, seed = 11)
  one <- hako_map(1:6, function(i) i + runif(1))[.flat]
  chunked_one <- hako_map(1:6, function(i) i + runif(1), .chunk = 3)[.flat]
  daemons(0)
  daemons(2, seed = 11)
  before <- runs()
  expect_identical(hako_map(1:6, function(i) i + runif(1), .replicas = 2)[.flat], one)
  expect_equal(runs() - before, 12)
  expect_identical(hako_map(1:6, function(i) i + runif(1), .chunk = 3, .replicas = 2)[.flat], chunked_one)
  expect_equal(runs() - before, 16)
})

test_that("daemons(replicas = ) is the profile's default, and .replicas overrides it", {
  on.exit(reset_all())
  daemons(2, replicas = 2)
  expect_equal(hako(1 + 1)[], 2)
  expect_equal(runs(), 2)
  expect_equal(hako(1 + 1, .replicas = 1)[], 2)
  expect_equal(runs(), 3)
  expect_error(daemons(1, replicas = 2, .compute = "small"), "at least 2 are needed")
})

test_that("replicas that disagree resolve to a hakoDisagreed error naming them", {
  on.exit(reset_all())
  daemons(4)
  # /dev/urandom (the host's CSPRNG) differs between runs, as the clock may
  # not (runs in parallel can read the same tick): after k + 2 = 4
  # different results, an error
  v <- hako(readBin("/dev/urandom", "raw", 16L), .replicas = 2)[]
  expect_true(is_hako_error(v))
  expect_identical(v$condition.class[[1L]], "hakoDisagreed")
  expect_match(v$message, "^replicas disagree: no result had 2 identical votes of 4, 4 distinct results: value [0-9a-f]{8} from local")
  expect_equal(sum(status()$table$disagreements), 0)
  # with no daemon left to break the tie, at once (it waited for ever before)
  daemons(0)
  daemons(2)
  v <- hako(readBin("/dev/urandom", "raw", 16L), .replicas = 2)[]
  expect_identical(v$condition.class[[1L]], "hakoDisagreed")
  expect_match(v$message, "^replicas disagree: no result had 2 identical votes of 2, 2 distinct results \\(no other connected daemon may run another replica\\)")
})

test_that(".replicas is checked", {
  on.exit(reset_all())
  for (bad in list(0, 6, 1.5, "2", NA, c(1, 2), -1)) {
    expect_error(hako(1, .replicas = bad), "'.replicas' must be a whole number from 1 to 5")
  }
  expect_error(daemons(2, replicas = 9), "'replicas' must be a whole number from 1 to 5")
  daemons(1)
  expect_error(hako(1, .replicas = 2), "runs each task on 2 distinct daemons, but compute profile 'default' has 1")
  expect_error(hako_map(1:2, identity, .replicas = 2), "has 1: set daemons\\(2\\)")
  expect_equal(hako(1, .replicas = 1)[], 1)
})

test_that("without daemons, a replicated task gets a daemon per replica", {
  on.exit(reset_all())
  expect_equal(hako(2 * 21, .replicas = 2)[], 42)
})
