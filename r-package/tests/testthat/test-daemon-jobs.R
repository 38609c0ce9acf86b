# hako::daemon(jobs = ): one process, several sandboxes, each task's line in
# the daemon's log names its job and its user.

test_that("daemon(jobs = 2) runs two jobs in one process and logs each task with its user", {
  skip_if(parallel::detectCores() < 2, "one core: --jobs 2 is refused")
  on.exit(reset_all())
  d <- daemons(url = host_url(host = "127.0.0.1"), .compute = "jobs")
  bad <- tryCatch(daemon(d$url, token = "t", jobs = 0), error = conditionMessage)
  expect_match(bad, "'jobs'")
  m <- hako(6 * 7, .compute = "jobs")
  log <- tempfile()
  st <- daemon(d$url, token = d$token, fingerprint = d$fingerprint, jobs = 2, idletime = 800, log = log)
  expect_equal(st, 0L)
  expect_equal(m[], 42)
  text <- readLines(log)
  expect_true(any(grepl("job 1: connected", text, fixed = TRUE)), info = paste(text, collapse = "\n"))
  expect_true(any(grepl("job 2: connected", text, fixed = TRUE)), info = paste(text, collapse = "\n"))
  expect_true(any(grepl("job [12]: task [0-9]+ \\(user local\\): value in", text)), info = paste(text, collapse = "\n"))
})
