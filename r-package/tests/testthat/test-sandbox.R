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

test_that("a mount makes a directory readable, and no more", {
  on.exit(reset_all())
  dir <- tempfile("mnt")
  dir.create(dir)
  writeLines("hello", file.path(dir, "a.txt"))
  secret <- tempfile("secret")
  writeLines("secret", secret)
  file.symlink(secret, file.path(dir, "escape"))
  daemons(1, mount = stats::setNames("/data:ro", dir))
  expect_equal(hako(readLines("/data/a.txt"))[], "hello")
  expect_setequal(hako(list.files("/data"))[], c("a.txt", "escape"))
  # read-only: a write fails in the sandbox and nothing appears on the host
  e <- suppressWarnings(hako(writeLines("x", "/data/b.txt"))[])
  expect_true(is_hako_error(e))
  expect_false(file.exists(file.path(dir, "b.txt")))
  # no way out of the mount: `..`, an absolute symlink, the host path itself
  for (p in c("/data/../etc/passwd", "/data/escape", file.path("/data/..", secret), secret)) {
    e <- suppressWarnings(hako(readLines(p), p = p)[])
    expect_true(is_hako_error(e), info = p)
  }
  expect_false(hako(file.exists(file.path(dir, "a.txt")), dir = dir)[])
  daemons(0)

  # read-write: the task's file lands in the host directory
  daemons(1, mount = stats::setNames("/out:rw", dir))
  expect_null(hako(writeLines("from the sandbox", "/out/b.txt"))[])
  expect_equal(readLines(file.path(dir, "b.txt")), "from the sandbox")
})

test_that("a bad mount is refused before any daemon starts", {
  on.exit(reset_all())
  dir <- tempfile("mnt")
  dir.create(dir)
  expect_error(daemons(1, mount = "/data"), "named")
  expect_error(daemons(1, mount = stats::setNames("data", dir)), "absolute")
  expect_error(daemons(1, mount = stats::setNames("/data", file.path(dir, "nope"))), "no such directory")
  expect_error(daemons(1, mount = stats::setNames("/tmp/data", dir)), "overlaps /tmp")
  expect_null(info())  # nothing was set (hako() would now run in an ephemeral daemon)
  daemons(1)
  expect_equal(hako(1 + 1)[], 2)
})
