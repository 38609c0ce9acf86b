test_that("hako_map over vectors, lists, data frames and matrices", {
  on.exit(reset_all())
  daemons(2)
  m <- hako_map(c(a = 1, b = 2, c = 3), function(x, k) x * k, .args = list(k = 10))
  expect_s3_class(m, "hako_map")
  expect_equal(m[], list(a = 10, b = 20, c = 30))
  expect_equal(m[.flat], c(a = 10, b = 20, c = 30))
  expect_output(print(m), "3/3")
  expect_false(unresolved(m))
  expect_equal(hako_map(list(1:3, 4:6), sum)[.flat], c(6L, 15L))
  df <- data.frame(x = 1:3, y = c("a", "b", "c"))
  expect_equal(hako_map(df, function(x, y) paste0(y, x))[.flat], c("a1", "b2", "c3"))
  mat <- matrix(1:6, 3, dimnames = list(NULL, c("u", "v")))
  expect_equal(hako_map(mat, function(u, v) u * v)[.flat], c(4L, 10L, 18L))
  expect_equal(hako_map(1:3, function(i) helper(i), helper = function(i) -i)[.flat], -(1:3))
  expect_equal(hako_map(integer(), identity)[], list())
  expect_equal(collect_hako(hako_map(1:2, identity), ".flat"), 1:2)
  expect_equal(call_hako(hako_map(1:2, identity))[.flat], 1:2)
  expect_error(hako_map(1:2, "notfun"), "must be a function")
  expect_equal(length(hako_map(1:200, sqrt)[.progress]), 200)
})

test_that("hako_map errors: values, .flat and .stop", {
  on.exit(reset_all())
  daemons(2)
  f <- function(x) if (x == 2) stop("two!") else x
  r <- hako_map(1:3, f)[]
  expect_true(is_hako_error(r[[2]]))
  expect_equal(r[[3]], 3)
  expect_error(hako_map(1:3, f)[.flat], "element 2 failed: two!")
  g <- function(x) if (x == 1) stop("first!") else { Sys.sleep(5); x }
  t0 <- Sys.time()
  expect_error(hako_map(1:6, g)[.stop, .progress], "element 1 failed: first!")
  expect_lt(as.numeric(Sys.time() - t0, units = "secs"), 4.5)
  m <- hako_map(1:4, function(i) Sys.sleep(30))
  expect_equal(stop_hako(m), rep(TRUE, 4))  # one per element, as mirai
  expect_true(all(vapply(m[], is_hako_interrupt, NA)))
  expect_equal(hako(1)[], 1)
  expect_error(hako_map(1:2, identity)[.nope <- 1], "unknown")
})

test_that("x[.flat] refuses mixed types, keeps classes; errors name the element", {
  on.exit(reset_all())
  daemons(1)
  expect_error(hako_map(list(1, "a", TRUE), identity)[.flat], "differing type: double / character \\(element 2\\)")
  d <- as.Date("2024-01-01") + 0:1
  expect_equal(hako_map(as.list(d), identity)[.flat], d)
  expect_error(hako_map(list(1L, 2.5), identity)[.flat], "differing type: integer / double")
  f <- function(x) if (x == 2) stop("two!") else x
  expect_error(hako_map(c(a = 1, b = 2), f)[.flat], "element 2 \\('b'\\) failed: two!")
  expect_error(hako_map(c(a = 1, b = 2), f)[.stop], "element 2 \\('b'\\) failed: two!")
})
