# hako_map(.chunk = ): elements share a sandbox within a chunk only.

test_that("a chunked map gives the default path's results and per-element errors", {
  on.exit(reset_all())
  daemons(2)
  f <- function(x) if (x %% 3 == 0) stop("bad ", x) else x * 2
  ref <- hako_map(1:10, f)[]
  for (ch in list(TRUE, 1, 3, 4, 100)) {
    r <- hako_map(1:10, f, .chunk = ch)[]
    expect_identical(r, ref)
  }
  expect_true(is_hako_error(ref[[3]]))
  expect_equal(attr(ref[[6]], "message"), "bad 6")
  # names, lists, data frames, .args and globals in '...' as without chunks
  expect_equal(hako_map(c(a = 1, b = 2), function(x, k) x * k, .args = list(k = 10), .chunk = 5)[],
               list(a = 10, b = 20))
  df <- data.frame(x = 1:3, y = c("a", "b", "c"))
  expect_equal(hako_map(df, function(x, y) paste0(y, x), .chunk = 2)[.flat], c("a1", "b2", "c3"))
  expect_equal(hako_map(list(1:3, NULL, 4:6), function(v) helper(v), helper = function(v) sum(v), .chunk = 2)[.flat],
               c(6L, 0L, 15L))
  expect_equal(hako_map(1:3, function(i) NULL, .chunk = 2)[], list(NULL, NULL, NULL))
  expect_equal(hako_map(integer(), identity, .chunk = TRUE)[], list())
  expect_error(hako_map(1:2, identity, .chunk = 0), "'.chunk' must be")
  expect_error(hako_map(1:2, identity, .chunk = "a"), "'.chunk' must be")
  # a warning in an element is relayed and does not end the chunk
  expect_warning(r <- hako_map(1:3, function(i) { if (i == 1) warning("w1"); i }, .chunk = 3)[.flat], "w1")
  expect_equal(r, 1:3)
})

test_that("elements of one chunk share a sandbox; chunks and maps do not", {
  on.exit(reset_all())
  daemons(2)
  f <- function(i) {
    seen <- exists("G", envir = globalenv())
    if (i == 1) assign("G", 42, envir = globalenv())
    seen
  }
  # element 1 sets G: element 2 of its chunk sees it, the next chunk not
  expect_equal(hako_map(1:4, f, .chunk = 2)[.flat], c(FALSE, TRUE, FALSE, FALSE))
  # nor the next map, nor a task
  expect_equal(hako_map(2:5, f, .chunk = 4)[.flat], rep(FALSE, 4))
  expect_false(hako(exists("G", envir = globalenv()))[])
  # the default stays pristine per element
  expect_equal(hako_map(1:4, f)[.flat], rep(FALSE, 4))
})

test_that("a chunked map's .stop, .progress, stop_hako and limits act per element", {
  on.exit(reset_all())
  daemons(2)
  g <- function(x) if (x == 1) stop("first!") else { Sys.sleep(5); x }
  t0 <- Sys.time()
  expect_error(hako_map(1:6, g, .chunk = 1)[.stop, .progress], "element 1 failed: first!")
  expect_lt(as.numeric(Sys.time() - t0, units = "secs"), 4.5)
  expect_equal(length(hako_map(1:200, sqrt, .chunk = 7)[.progress]), 200)
  m <- hako_map(1:4, function(i) Sys.sleep(30), .chunk = 2)
  expect_equal(stop_hako(m), rep(TRUE, 4))
  expect_true(all(vapply(m[], is_hako_interrupt, NA)))
  # a time limit is the chunk's, and so each of its elements' error
  r <- hako_map(1:4, function(i) if (i == 4) Sys.sleep(30) else i, .chunk = 2, .timeout = 500)[]
  expect_equal(r[1:2], list(1L, 2L))
  expect_true(all(vapply(r[3:4], is_error_value, NA)))
  expect_equal(hako(1)[], 1)
})
