test_that("hako_binary() finds the binary and explains how to get it", {
  b <- hako_binary()
  expect_true(file.exists(b))
  old <- options(hako.binary = "/nonexistent/hako")
  on.exit(options(old))
  expect_error(hako_binary(), "cargo build --release -p hako")
  expect_error(hako_binary(), "HAKO_BINARY")
  expect_error(daemons(1, .compute = "nobin"), "cargo install --path host")
  expect_null(info(.compute = "nobin"))
})

test_that("sandbox_packages() lists base R's set", {
  expect_true(all(c("base", "stats", "parallel") %in% sandbox_packages()))
})
