# A task's text reaches the user's terminal only with its control
# characters rendered visibly: no window title, clear screen, cursor
# movement or OSC 52 clipboard write from a sandbox.

ESC <- "\033"

no_controls <- function(x) {
  expect_false(any(grepl("[\001-\010\013-\037\177]", x, useBytes = TRUE)), info = paste(x, collapse = "|"))
}

test_that("safe_text() renders C0, DEL and C1 controls visibly and keeps text, tabs and newlines", {
  st <- hako:::safe_text
  expect_identical(st("plain\ttext\n"), "plain\ttext\n")
  expect_identical(st(paste0(ESC, "]0;title\007")), "^[]0;title^G")
  expect_identical(st(paste0("a\rb\bc\177", ESC, "[2J")), "a^Mb^Hc^?^[[2J")
  expect_identical(st(paste0(ESC, "]52;c;cHduZWQ=", ESC, "\\")), "^[]52;c;cHduZWQ=^[\\")
  csi <- enc2utf8("\u00e9\u009b31m")
  expect_identical(st(csi), enc2utf8("\u00e9<U+009B>31m"))
  expect_identical(st(c(NA, "ok")), c(NA, "ok"))
  # a line ending in CRLF keeps it
  expect_identical(st("a\r\nb\rc"), "a\r\nb^Mc")
  # bytes that are not UTF-8 (a lone 0x9B is CSI to some terminals)
  bad <- rawToChar(as.raw(c(0xff, 0x1b, 0x41, 0x9b, 0x32, 0x4a)))
  Encoding(bad) <- "UTF-8"
  expect_identical(st(bad), "<ff>^[A<9b>2J")
  lat <- rawToChar(as.raw(c(0x63, 0x61, 0x66, 0xe9, 0x1b)))
  Encoding(lat) <- "latin1"
  expect_identical(st(lat), enc2utf8("caf\u00e9^["))
})

test_that("relayed output, messages, warnings and error values carry no terminal controls", {
  on.exit(reset_all())
  daemons(1)
  title <- paste0(ESC, "]0;pwned", "\007")
  clip <- paste0(ESC, "]52;c;cHduZWQ=", "\007")
  x <- hako({
    cat(title, "out", "\n", sep = "")
    cat(paste0(clear, "err\n"), file = stderr())
    message(clip, "msg")
    warning(paste0(clear, "warn"))
    1
  }, title = title, clear = paste0(ESC, "[2J", ESC, "[H"), clip = clip)
  msgs <- character()
  warns <- character()
  out <- capture.output(
    withCallingHandlers(v <- x[],
      message = function(m) { msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage") },
      warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") }
    ),
    type = "output"
  )
  expect_equal(v, 1)
  expect_true(any(grepl("^[]0;pwned^Gout", out, fixed = TRUE)))
  expect_true(any(grepl("^[]52;c;cHduZWQ=^Gmsg", msgs, fixed = TRUE)))
  expect_true(any(grepl("^[[2J^[[Hwarn", warns, fixed = TRUE)))
  no_controls(c(out, msgs, warns))

  e <- hako(stop(m), m = paste0(ESC, "[31mred", ESC, "]0;t\007"))[]
  expect_true(is_hako_error(e))
  # the value keeps the message as sent; what is shown is rendered safe
  expect_equal(e$message, paste0(ESC, "[31mred", ESC, "]0;t\007"))
  shown <- capture.output(print(e))
  expect_true(any(grepl("^[[31mred^[]0;t^G", shown, fixed = TRUE)))
  no_controls(shown)
  err <- tryCatch(hako_map(1:2, function(i) stop(paste0(intToUtf8(27L), "[2J", i)))[.flat], error = conditionMessage)
  expect_match(err, "^[[2J", fixed = TRUE)
  no_controls(err)
})

test_that("a future's relayed stdout and conditions carry no terminal controls", {
  skip_if_not_installed("future")
  on.exit({ future::plan("sequential"); reset_all() })
  daemons(1)
  future::plan(hako::hako_cluster)
  f <- future::future({
    cat(paste0(esc, "]0;pwned\007out\n"))
    message(paste0(esc, "[2Jmsg"))
    warning(paste0(esc, "[Hwarn"))
    stop(paste0(esc, "[31mboom"))
  }, globals = list(esc = ESC))
  msgs <- character()
  warns <- character()
  out <- capture.output(
    err <- tryCatch(withCallingHandlers(future::value(f),
      message = function(m) { msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage") },
      warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") }
    ), error = conditionMessage),
    type = "output"
  )
  expect_true(any(grepl("^[]0;pwned^Gout", out, fixed = TRUE)))
  expect_true(any(grepl("^[[2Jmsg", msgs, fixed = TRUE)))
  expect_true(any(grepl("^[[Hwarn", warns, fixed = TRUE)))
  expect_match(err, "^[[31mboom", fixed = TRUE)
  no_controls(c(out, msgs, warns, err))
})

test_that("a failed cluster node's error, as parallel shows it, carries no terminal controls", {
  cl <- make_cluster(1)
  on.exit(parallel::stopCluster(cl))
  err <- tryCatch(parallel::clusterCall(cl, function(m) stop(m), paste0(ESC, "]0;pwned\007")),
                  error = conditionMessage)
  expect_match(err, "^[]0;pwned^G", fixed = TRUE)
  no_controls(err)
})
