# Getting started: a first start on a machine shows its steps in this
# session, and a host that stops during start-up is an R error in the host's
# own words. "Fresh" is simulated with private HAKO_ASSETS / HAKO_CACHE
# directories, never by touching the real cache.

# Runs `code` with the environment variables `env` set, restoring them after.
with_env <- function(env, code) {
  old <- Sys.getenv(names(env), unset = NA, names = TRUE)
  on.exit(for (k in names(old)) {
    if (is.na(old[[k]])) Sys.unsetenv(k) else do.call(Sys.setenv, stats::setNames(list(old[[k]]), k))
  })
  do.call(Sys.setenv, as.list(env))
  code
}

test_that("without npm on a fresh machine, daemons() fails with what the host said", {
  empty <- tempfile("bin-")
  dir.create(empty)
  assets <- tempfile("assets-")
  on.exit(unlink(c(empty, assets), recursive = TRUE))
  err <- with_env(c(PATH = empty, HAKO_ASSETS = assets, HAKO_WEBR_TARBALL = ""),
                  tryCatch(daemons(1, .compute = "nonpm"), error = identity))
  expect_s3_class(err, "error")
  msg <- conditionMessage(err)
  # the host's words, not R's socket error
  expect_match(msg, "`hako host` stopped before it was ready", fixed = TRUE)
  expect_match(msg, "could not get npm package webr@0.6.0: `npm` is not on PATH", fixed = TRUE)
  expect_false(grepl("socketConnection|cannot open the connection", msg))
  expect_null(info(.compute = "nonpm"))
})

test_that("a first start shows compiling R and starting it, then nothing on later starts", {
  cache <- tempfile("cache-")
  on.exit({
    daemons(0, .compute = "fresh")
    unlink(cache, recursive = TRUE)
  })
  shown <- character()
  keep <- function(m) {
    shown <<- c(shown, conditionMessage(m))
    invokeRestart("muffleMessage")
  }
  with_env(c(HAKO_CACHE = cache), withCallingHandlers(daemons(1, .compute = "fresh"), message = keep))
  expect_equal(hako(6 * 7, .compute = "fresh")[], 42)
  text <- paste(shown, collapse = "")
  expect_match(text, "compiling [0-9]+ MB of WebAssembly to machine code \\(once\\)")
  expect_match(text, "R is ready after [0-9]+ s")
  daemons(0, .compute = "fresh")
  # From the cache: silent.
  shown <- character()
  with_env(c(HAKO_CACHE = cache), withCallingHandlers(daemons(1, .compute = "fresh"), message = keep))
  expect_identical(shown, character())
})

test_that("start-up steps: cli steps when cli is there, messages otherwise", {
  log <- tempfile()
  on.exit(unlink(log))
  writeLines(c("2026-01-01T00:00:00.000000Z  INFO client joined",
               "hako: [start-up] compiling 18 MB of WebAssembly to machine code (once)",
               "hako: [start-up] compiling 18 MB of WebAssembly to machine code (once): done in 12.9 s",
               "hako: not a step"), log)
  plain <- hako:::startup_progress(log)
  plain$cli <- FALSE
  shown <- capture_messages(expect_true(hako:::progress_poll(plain)))
  expect_identical(shown, c("hako: compiling 18 MB of WebAssembly to machine code (once)\n",
                            "hako: compiling 18 MB of WebAssembly to machine code (once): done in 12.9 s\n"))
  # a half-written line waits for its end; nothing new is nothing shown
  cat("hako: [start-up] R is rea", file = log, append = TRUE)
  expect_silent(expect_false(hako:::progress_poll(plain)))
  cat("dy after 3 s {x}\n", file = log, append = TRUE)
  expect_message(hako:::progress_poll(plain), "R is ready after 3 s {x}", fixed = TRUE)
  skip_if_not_installed("cli")
  withr_free <- hako:::startup_progress(log)
  out <- capture.output(type = "message", {
    hako:::progress_poll(withr_free)
    hako:::progress_done(withr_free)
  })
  text <- paste(out, collapse = "\n")
  expect_match(text, "compiling 18 MB of WebAssembly to machine code (once)", fixed = TRUE)
  expect_match(text, "R is ready after 3 s {x}", fixed = TRUE)
  expect_false(grepl("INFO client joined", text, fixed = TRUE))
  expect_false(grepl("not a step", text, fixed = TRUE))
  # cli times the step itself: the host's "done in" line is not a step
  expect_false(grepl("done in", text, fixed = TRUE))
})

test_that("the host's error text: its ERROR lines, else its last words", {
  log <- tempfile()
  on.exit(unlink(log))
  writeLines(c("hako: [start-up] first start: preparing webR's R in /x (once, a minute or two)",
               "2026-01-01T00:00:00.000000Z  INFO client joined client=1 name=link",
               "2026-01-01T00:00:00.100000Z ERROR local daemons failed to start: npm is missing"), log)
  expect_identical(hako:::host_error_text(log), "local daemons failed to start: npm is missing")
  writeLines(c("2026-01-01T00:00:00.000000Z  INFO starting", "hako: [start-up] starting R",
               "hako: listening on 127.0.0.1:7000: Address already in use (os error 98)"), log)
  expect_identical(hako:::host_error_text(log), "hako: listening on 127.0.0.1:7000: Address already in use (os error 98)")
})

test_that("a host that cannot start says why in its words, not as a step", {
  on.exit(for (p in c("first", "second")) daemons(0, .compute = p))
  d <- daemons(url = host_url(host = "127.0.0.1"), .compute = "first")
  shown <- character()
  err <- tryCatch(withCallingHandlers(daemons(url = d$url, .compute = "second"), message = function(m) {
    shown <<- c(shown, conditionMessage(m))
    invokeRestart("muffleMessage")
  }), error = identity)
  expect_s3_class(err, "error")
  expect_match(conditionMessage(err), "`hako host` stopped before it was ready; it said:\nhako: listening on 127.0.0.1:[0-9]+: Address already in use")
  expect_identical(shown, character())
})
