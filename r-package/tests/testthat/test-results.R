# What comes back from a sandbox: every form people return round-trips
# through the host's result verifier into this session, and the shapes that
# would run a task's code here (or crash R) are refused, never unserialized.

test_that("fitted models, data frames, S4 objects, closures and formulas round-trip", {
  on.exit(reset_all())
  daemons(1)
  fit <- hako(lm(mpg ~ wt, data = mtcars))[]
  expect_false(is_hako_error(fit))
  expect_s3_class(fit, "lm")
  expect_equal(unname(coef(fit)), unname(coef(lm(mpg ~ wt, data = mtcars))))
  g <- hako(glm(am ~ wt, data = mtcars, family = binomial))[]
  expect_false(is_hako_error(g))
  expect_s3_class(g, "glm")
  local_fit <- glm(am ~ wt, data = mtcars, family = binomial)
  expect_equal(predict(g, mtcars[1:3, ], type = "response"), predict(local_fit, mtcars[1:3, ], type = "response"))
  df <- hako(data.frame(
    f = factor(c("a", "b", NA)), d = as.Date("2024-01-01") + 0:2,
    t = as.POSIXct("2024-01-01 10:00:00", tz = "UTC") + 0:2, m = I(matrix(1:6, 3))
  ))[]
  expect_s3_class(df, "data.frame")
  expect_equal(levels(df$f), c("a", "b"))
  expect_equal(df$d[2], as.Date("2024-01-02"))
  expect_equal(format(df$t[3], tz = "UTC"), "2024-01-01 10:00:02")
  s4 <- hako({
    setClass("Pt", representation(x = "numeric", y = "numeric"))
    new("Pt", x = 1, y = 2)
  })[]
  expect_true(isS4(s4))
  expect_equal(s4@y, 2)
  clo <- hako({
    make <- function(n) { force(n); function(x) x + n }
    make(10)
  })[]
  expect_equal(clo(1), 11)
  # a factory's argument not used yet is a promise: forced in the sandbox
  lazy <- hako({
    make <- function(n) function(x) x + n
    make(5 * 2)
  })[]
  expect_false(is_hako_error(lazy))
  expect_equal(lazy(1), 11)
  fo <- hako(y ~ x + log(z))[]
  expect_s3_class(fo, "formula")
  # base R's compiled functions: sent without byte code, still callable
  fs <- hako(list(sd = stats::sd, fam = binomial()))[]
  expect_false(is_hako_error(fs))
  expect_equal(fs$sd(c(1, 3)), sd(c(1, 3)))
  expect_equal(fs$fam$linkinv(0), 0.5)
  # an error whose call holds a compiled function (do.call): its error
  # value, not a refusal
  ev <- hako(do.call(eval, list(quote(stop("bad")))))[]
  expect_true(is_hako_error(ev))
  expect_false("hakoRefused" %in% ev$condition.class)
  expect_match(ev$message, "bad")
})

test_that("an environment holding a promise or an active binding is refused, its code never runs here", {
  on.exit(reset_all())
  daemons(1)
  marker <- tempfile()
  # (locked, so the runner cannot force it in the sandbox first)
  v <- hako({
    e <- new.env()
    delayedAssign("x", writeLines("ran", m), assign.env = e)
    lockBinding("x", e)
    e
  }, m = marker)[]
  expect_true(is_hako_error(v))
  expect_true("hakoRefused" %in% v$condition.class)
  expect_match(v$message, "result refused: a promise")
  a <- hako({
    e <- new.env()
    makeActiveBinding("result", function() writeLines("ran", m), e)
    e
  }, m = marker)[]
  expect_true("hakoRefused" %in% a$condition.class)
  expect_match(a$message, "result refused: an environment holds an active")
  expect_false(file.exists(marker))
  # the daemon lives on
  expect_equal(hako(1 + 1)[], 2)
})

test_that("a task that redefines the runner's helpers cannot forge what is sent", {
  on.exit(reset_all())
  daemons(1)
  v <- hako({
    assign("serialize", function(...) as.raw(1:10), envir = globalenv())
    assign("list", function(...) base::list(0L, as.raw(1:10)), envir = globalenv())
    assign("to_bytes", function(...) as.raw(1:10), envir = globalenv())
    42
  })[]
  expect_equal(v, 42)
  expect_equal(hako(sum(1:3))[], 6L)
})
