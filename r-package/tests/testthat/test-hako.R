test_that("hako() evaluates with ... globals and .args locals", {
  on.exit(reset_all())
  d <- daemons(2, seed = 42)
  expect_s3_class(d, "hakoDaemons")
  f <- function(x) x * k
  m <- hako(f(y), f = f, k = 3, .args = list(y = 2))
  expect_s3_class(m, "hako")
  expect_equal(m[], 6)
  expect_equal(m$data, 6)
  expect_false(unresolved(m))
  expect_output(print(m), "hako")
  e <- quote(1 + 2)
  expect_equal(hako(e)[], 3)
  ex <- expression(a <- 2, a * 5)
  expect_equal(hako(ex)[], 10)
  env <- new.env(); env$zz <- 7
  expect_equal(hako(zz + 1, env)[], 8)
  expect_equal(call_hako(hako(5))$data, 5)
  expect_equal(collect_hako(list(hako(1), hako(2))), list(1, 2))
})

test_that("unresolved() and $data do not block", {
  on.exit(reset_all())
  daemons(1)
  m <- hako(Sys.sleep(1))
  t0 <- Sys.time()
  expect_true(unresolved(m))
  expect_true(unresolved(m$data))
  expect_true(unresolved(list(m)))
  expect_lt(as.numeric(Sys.time() - t0, units = "secs"), 0.5)
  expect_output(print(m$data), "unresolved")
  m[]
  expect_false(unresolved(m))
  expect_false(unresolved(1))
})

test_that("errors resolve to hakoError values with the condition's fields", {
  on.exit(reset_all())
  daemons(1)
  e <- hako(stop("boom"))[]
  expect_true(is_hako_error(e))
  expect_true(is_error_value(e))
  expect_false(is_hako_interrupt(e))
  expect_s3_class(e, "try-error")
  expect_equal(e$message, "boom")
  expect_true("simpleError" %in% e$condition.class)
  expect_output(print(e), "hakoError")
  g <- function() stop(structure(class = c("myError", "error", "condition"),
                                 list(message = "custom", call = NULL, field = 42)))
  e2 <- hako(h(), h = function() g(), g = g)[]
  expect_equal(e2$field, 42)
  expect_equal(e2$condition.class, c("myError", "error", "condition"))
  expect_true(any(grepl("g()", unlist(e2$stack.trace), fixed = TRUE)))
  # the session and the daemons stay usable
  expect_equal(hako(1)[], 1)
})

test_that("a timeout resolves to errorValue 5 and the daemon keeps working", {
  on.exit(reset_all())
  daemons(1, timeout = 20000)
  v <- hako(Sys.sleep(30), .timeout = 300)[]
  expect_true(is_error_value(v))
  expect_false(is_hako_error(v))
  expect_equal(as.integer(unclass(v)), 5L)
  expect_output(print(v), "Timed out")
  expect_equal(hako(2)[], 2)
  daemons(0)
  daemons(1, timeout = 300)
  expect_equal(as.integer(unclass(hako(repeat {})[])), 5L)
})

test_that("stop_hako() interrupts a running task: errorValue 20", {
  on.exit(reset_all())
  daemons(1)
  m <- hako(Sys.sleep(30))
  Sys.sleep(0.3)
  t0 <- Sys.time()
  expect_true(stop_hako(m))
  v <- m[]
  expect_true(is_hako_interrupt(v))
  expect_equal(as.integer(unclass(v)), 20L)
  expect_false(stop_hako(m))
  # the daemon was really interrupted: the next task runs at once
  expect_equal(hako(3)[], 3)
  expect_lt(as.numeric(Sys.time() - t0, units = "secs"), 10)
  # a list of hakos
  ms <- list(hako(Sys.sleep(30)), hako(Sys.sleep(30)))
  expect_equal(stop_hako(ms), c(TRUE, TRUE))  # one per element, as mirai
  expect_true(all(vapply(ms, function(x) is_hako_interrupt(x[]), NA)))
})

test_that("output, messages and warnings are relayed", {
  on.exit(reset_all())
  daemons(1)
  expect_output(hako(cat("hello from the sandbox\n"))[], "hello from the sandbox")
  expect_message(hako({ message("note this"); 1 })[], "note this")
  expect_warning(v <- hako({ warning("careful"); 2 })[], "careful")
  expect_equal(v, 2)
  daemons(0)
  daemons(1, output = FALSE)
  expect_silent(hako({ cat("x\n"); message("m"); 1 })[])
})

test_that("RNG streams are reproducible whatever the number of daemons", {
  on.exit(reset_all())
  daemons(1, seed = 123)
  a <- hako_map(1:6, function(i) runif(2))[]
  b <- hako(rnorm(1))[]
  daemons(0)
  daemons(3, seed = 123)
  a2 <- hako_map(1:6, function(i) runif(2))[]
  b2 <- hako(rnorm(1))[]
  expect_identical(a, a2)
  expect_identical(b, b2)
  expect_false(identical(a[[1]], a[[2]]))
  # the session's own RNG is untouched by daemons(seed = )
  set.seed(1); u <- runif(1)
  set.seed(1); daemons(0); daemons(1, seed = 9); expect_identical(runif(1), u)
})

test_that("bad input gives clear errors and leaves the session usable", {
  on.exit(reset_all())
  daemons(1, max_payload = 1)
  expect_error(daemons(1), "already set")
  expect_error(do.call(hako, list(function() 1)), "must be an expression")
  expect_error(hako(1, new.env()$x), "must be named")
  expect_error(hako(1, 2), "must be named")
  expect_error(hako(1, .args = list(1)), "named list")
  ptr <- new("externalptr")
  expect_error(hako(x, x = ptr), "external pointer")
  expect_error(hako(x, x = list(a = 1, b = new.env()$nothing, c = ptr)), "external pointer")
  expect_error(hako(length(x), x = runif(2e5)), "larger than the host's bound")
  expect_equal(hako(length(x), x = runif(1e4))[], 1e4)
  daemons(0)
  # without daemons, hako() runs in an ephemeral daemon (test-mirai-args.R)
  expect_error(hako_map(1:2, identity), "call daemons\\(n\\) first")
  expect_error(everywhere(1), "no daemons")
  expect_null(info())
  expect_equal(status()$connections, 0L)
  daemons(1)
  expect_equal(hako(1)[], 1)
  expect_error(daemons(-1), "non-negative")
  expect_error(daemons(url = "tcp://127.0.0.1:0"), "wss://")
})

test_that("a malformed task reaches the sandbox as an error value, not a crash", {
  on.exit(reset_all())
  daemons(1)
  p <- hako:::get_profile(NULL)
  send <- function(payload) {
    id <- hako:::new_id(p)
    x <- hako:::new_hako(p, id)
    assign(as.character(id), x, envir = p$pending)
    hako:::send_raw(p, hako:::task_frame(id, 0L, payload))
    x[]
  }
  s3 <- function(x) serialize(x, NULL, version = 3L)
  inner <- function(globals) s3(list(expr = quote(y + 1), args = NULL, globals = globals, seed = NULL))
  expect_equal(send(s3(list(packages = character(), task = inner(s3(list(y = 1)))))), 2)
  e <- send(s3(list(packages = character(), task = inner(as.raw(1:10)))))
  expect_true(is_hako_error(e))
  expect_match(e$message, "globals are not a serialize")
  e <- send(s3(list(packages = character(), task = as.raw(1:10))))
  expect_match(e$message, "not a serialize")
  e <- send(s3(list(packages = c("stats", "nosuchpkg"), task = inner(NULL))))
  expect_match(e$message, "not available in the sandbox: nosuchpkg")
  e <- send(as.raw(1:10))
  expect_match(e$message, "not a serialize")
  # leaving through the abort restart is an error value too
  e <- hako(invokeRestart("abort"))[]
  expect_true(is_hako_error(e))
  expect_match(e$message, "aborted")
  expect_equal(hako(1 + 1)[], 2)
})

test_that("daemons(0) resolves pending tasks to errorValue 19", {
  on.exit(reset_all())
  daemons(1)
  m <- hako(Sys.sleep(30))
  daemons(0)
  expect_equal(as.integer(unclass(m[])), 19L)
})

test_that("compute profiles and with(daemons())", {
  on.exit(reset_all())
  daemons(1, .compute = "a")
  daemons(2, .compute = "b")
  expect_equal(info(.compute = "a")[["connections"]], 1L)
  expect_equal(info(.compute = "b")[["connections"]], 2L)
  expect_equal(hako(1, .compute = "b")[], 1)
  expect_error(hako_map(1, identity), "no daemons")
  r <- with(daemons(1, .compute = "w"), hako(40 + 2)[])
  expect_equal(r, 42)
  expect_null(info(.compute = "w"))
  expect_output(print(daemons(1, .compute = "c")), "compute profile 'c'")
  st <- daemons(.compute = "b")
  expect_equal(st$connections, 2L)
})

test_that("info(), status() and everywhere()", {
  on.exit(reset_all())
  daemons(2)
  i <- info()
  expect_named(i, c("connections", "cumulative", "awaiting", "executing", "completed"), ignore.order = TRUE)
  expect_equal(i[["connections"]], 2L)
  s <- status()
  expect_equal(s$daemons, "local")
  expect_equal(nrow(s$table), 2L)
  expect_length(everywhere({ helper <- function(x) x * 100; library(stats4) })[], 2L)
  expect_equal(hako(helper(2))[], 200)
  expect_true(hako("package:stats4" %in% search())[])
  expect_equal(everywhere(k <- kk, kk = 5)[.flat], c(5, 5))
  expect_equal(hako_map(1:2, function(i) k + i)[.flat], c(6, 7))
})

test_that("getOption('warn') is respected: 2 makes a warning an error, < 0 drops it", {
  on.exit(reset_all())
  daemons(1)
  e <- hako({ options(warn = 2); as.integer("a") })[]
  expect_true(is_hako_error(e))
  expect_match(e$message, "(converted from warning) NAs introduced by coercion", fixed = TRUE)
  caught <- hako({ options(warn = 2); tryCatch(warning("w"), error = function(e) conditionMessage(e)) })[]
  expect_equal(caught, "(converted from warning) w")
  expect_silent(v <- hako({ options(warn = -1); as.integer("a") })[])
  expect_identical(v, NA_integer_)
  expect_warning(hako({ options(warn = 0); as.integer("a") })[], "NAs introduced")
})

test_that("$stack.trace is a list of calls, most recent first, as in mirai", {
  on.exit(reset_all())
  daemons(1)
  e <- hako(f(1), f = function(x) g(x), g = function(y) stop("deep"))[]
  st <- e$stack.trace
  expect_type(st, "list")
  expect_true(all(vapply(st, is.call, NA)))
  expect_equal(st, list(quote(stop("deep")), quote(g(x)), quote(f(1))))
  # a function inlined in a call (do.call) comes back as code, not a closure
  e2 <- hako(do.call(function(z) stop("inlined"), list(1)))[]
  expect_true(all(vapply(e2$stack.trace, is.call, NA)))
  expect_false(any(vapply(unlist(lapply(e2$stack.trace, as.list)), is.function, NA)))
})

test_that("parallel::detectCores() is 1 in the sandbox, not NA", {
  on.exit(reset_all())
  daemons(1)
  expect_identical(hako(parallel::detectCores())[], 1L)
  expect_identical(hako({ library(parallel); detectCores(logical = FALSE) })[], 1L)
})
