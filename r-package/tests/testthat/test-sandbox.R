test_that("the sandbox is seen from R: no host files, no processes, no network", {
  on.exit(reset_all())
  daemons(1)
  expect_warning(e <- hako(readLines("/etc/passwd"))[], "No such file")
  expect_true(is_hako_error(e))
  expect_match(e$message, "cannot open")
  expect_false(hako(file.exists("/etc/passwd"))[])
  expect_true(is_hako_error(hako(system("id"))[]))
  expect_true(is_hako_error(hako(url("http://example.com", "r"))[]))
  expect_setequal(hako(list.files("/"))[], c("dev", "home", "tmp", "usr"))
  # state does not carry over between tasks
  hako(assign("leak", 1, envir = globalenv()))[]
  expect_false(hako(exists("leak"))[])
  # a package the sandbox lacks: the error names it
  e2 <- hako(loadNamespace("testthat"))[]
  expect_match(e2$message, "testthat")
  f <- testthat::expect_true
  e3 <- hako(f(TRUE), f = f)[]
  expect_match(e3$message, "not available in the sandbox: testthat")
  expect_match(e3$message, "sandbox")
})

test_that("daemons(mount =) says the host cannot mount yet", {
  # `hako host` and `hako daemon` have no --mount yet (only `hako eval`); until
  # they do, asking for a mount must fail clearly rather than run unmounted.
  on.exit(reset_all())
  dir <- tempfile("mnt")
  dir.create(dir)
  expect_false(hako:::host_supports("host", "--mount"))
  expect_error(daemons(1, mount = stats::setNames("/data:ro", dir)), "no --mount option")
  expect_error(hako(1), "daemons")
})
