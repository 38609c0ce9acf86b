# The link's framing and result decoding, over a rawConnection() standing in
# for the socket: no binary, no sandbox. The bytes are laid out by hand as
# host/PROTOCOL.md ("Client link") describes them, not by the package's own
# writers, so a change to either side of the format shows here.

le32 <- function(x) writeBin(as.integer(x), raw(), size = 4L, endian = "little")
wire <- function(type, body = raw()) c(le32(length(body) + 1L), as.raw(type), body)
result_body <- function(id, status, payload = raw(), chunks = list()) {
  out <- c(le32(id), as.raw(status), le32(length(chunks)))
  for (ch in chunks) {
    txt <- charToRaw(ch$text)
    out <- c(out, as.raw(ch$stream), le32(length(txt)), txt)
  }
  c(out, payload)
}

# A link reading `bytes`, as if the host had sent them.
reader <- function(bytes) hako:::new_link("test", rawConnection(bytes, "rb"))

# Feed more bytes to the same link, as a later read of the socket would.
feed <- function(p, bytes) {
  close(p$con)
  p$con <- rawConnection(bytes, "rb")
  expect_true(hako:::drain(p))
  hako:::parse_frames(p)
}

waiting <- function(p, id) {
  x <- hako:::new_hako(p, id, relay = FALSE)
  assign(as.character(id), x, envir = p$pending)
  x
}

test_that("frames written to the link are length-prefixed with the type first", {
  con <- rawConnection(raw(), "wb")
  on.exit(close(con))
  p <- hako:::new_link("test", con)
  hako:::send_frame(p, 0x02, le32(7L))
  hako:::send_frame(p, 0x04)
  payload <- as.raw(1:3)
  hako:::send_raw(p, hako:::task_frame(9L, 1500L, payload))
  expect_identical(rawConnectionValue(con), c(
    wire(0x02, le32(7L)),
    wire(0x04),
    wire(0x01, c(le32(9L), le32(1500L), payload))
  ))
})

test_that("READY, NOTICE, ACK and INFO frames are read into the link's state", {
  p <- reader(c(
    wire(0x80, charToRaw("max_payload\t1024\nurl\twss://h:1\n")),
    wire(0x8F, charToRaw("hello\033[2J")),
    wire(0x82, c(le32(5L), le32(3L))),
    wire(0x83, charToRaw("connections\t2"))
  ))
  expect_true(hako:::drain(p))
  expect_identical(hako:::parse_frames(p), 4L)
  expect_identical(p$ready, list(max_payload = "1024", url = "wss://h:1"))
  # a notice is shown with its terminal controls rendered visibly
  expect_identical(p$notices, "hello^[[2J")
  expect_identical(get("5", envir = p$acks), 3L)
  expect_identical(p$info, "connections\t2")
  expect_identical(p$buf, raw())
  close(p$con)
})

test_that("a frame split across reads, at any byte, is handled once whole", {
  body <- result_body(1L, 0L, serialize(list(a = 1:3, b = "x"), NULL, version = 3L))
  bytes <- c(wire(0x82, c(le32(4L), le32(1L))), wire(0x81, body))
  for (cut in c(1L, 3L, 4L, 5L, 12L, length(bytes) - 1L)) {
    p <- reader(bytes[seq_len(cut)])
    x <- waiting(p, 1L)
    expect_true(hako:::drain(p))
    first <- hako:::parse_frames(p)
    expect_identical(first, if (cut >= 13L) 1L else 0L)
    expect_false(x$resolved)
    expect_identical(feed(p, bytes[-seq_len(cut)]) + first, 2L)
    expect_true(x$resolved)
    expect_identical(x$value, list(a = 1:3, b = "x"))
    expect_identical(get("4", envir = p$acks), 1L)
    close(p$con)
  }
})

test_that("a large RESULT is read whole through the growing reads, with its output", {
  big <- runif(50000)
  body <- result_body(3L, 0L, serialize(big, NULL, version = 3L),
                      chunks = list(list(stream = 0L, text = "out\033]0;t\007\n"), list(stream = 2L, text = "note\n")))
  p <- reader(wire(0x81, body))
  x <- waiting(p, 3L)
  x$relay <- TRUE
  expect_true(hako:::drain(p))
  expect_message(expect_output(hako:::parse_frames(p), "out^[]0;t^G", fixed = TRUE), "note")
  expect_identical(x$value, big)
  expect_identical(x$output[[1L]]$text, "out\033]0;t\007\n")
  close(p$con)
})

test_that("a RESULT nobody waits for (cancelled) is dropped", {
  p <- reader(c(wire(0x81, result_body(8L, 2L, charToRaw("late"))), wire(0x83, charToRaw("x"))))
  expect_true(hako:::drain(p))
  expect_identical(hako:::parse_frames(p), 2L)
  expect_identical(p$info, "x")
  close(p$con)
})

test_that("the end of the stream fails every waiting task with errorValue 19", {
  p <- reader(raw())
  x <- waiting(p, 1L)
  y <- waiting(p, 2L)
  expect_identical(hako:::read_frames(p, 0L), 0L)
  expect_false(p$alive)
  for (t in list(x, y)) {
    expect_true(t$resolved)
    expect_identical(unclass(t$value)[[1L]], 19L)
    expect_match(t$value$message, "closed the link")
  }
  expect_error(hako:::send_frame(p, 0x04), "are gone")
})

test_that("every RESULT status decodes to its value (host/PROTOCOL.md's table)", {
  dv <- function(status, payload) hako:::decode_value(status, payload)
  txt <- function(s) charToRaw(s)
  expect_identical(dv(0L, serialize(1:3, NULL)), 1:3)
  e <- hako:::mk_hako_error("boom", "simpleError")
  expect_identical(dv(1L, serialize(e, NULL)), e)
  ev <- function(v, code, msg) {
    expect_s3_class(v, "errorValue")
    expect_identical(unclass(v)[[1L]], code)
    expect_identical(v$message, msg)
  }
  ev(dv(2L, txt("too slow")), 5L, "too slow")
  ev(dv(3L, txt("cancelled")), 20L, "cancelled")
  expect_true(is_hako_interrupt(dv(3L, txt("c"))))
  ev(dv(4L, txt("lost")), 19L, "lost")
  ev(dv(8L, txt("bye")), 19L, "bye")
  he <- function(v, cls, msg) {
    expect_true(is_hako_error(v))
    expect_identical(v$condition.class[[1L]], cls)
    expect_identical(v$message, msg)
  }
  he(dv(5L, txt("mem")), "hakoMemoryLimit", "mem")
  he(dv(6L, txt("out")), "hakoOutputLimit", "out")
  he(dv(7L, txt("crash")), "hakoCrashed", "crash")
  he(dv(9L, txt("too large")), "hakoRejected", "too large")
  he(dv(10L, txt("result refused: x")), "hakoRefused", "result refused: x")
  he(dv(11L, txt("replicas disagree: x")), "hakoDisagreed", "replicas disagree: x")
  he(dv(12L, txt("?")), "hakoProtocolError", "unknown result status 12: ?")
  bad <- dv(0L, as.raw(1:10))
  expect_identical(bad$condition.class[[1L]], "hakoUnserializeError")
  expect_match(bad$message, "could not be unserialized")
  # one table names every status, in order
  expect_identical(hako:::RESULT_STATUS$code, 0:11)
})

test_that("a status's message shows a task's controls only visibly when printed", {
  v <- hako:::decode_value(7L, charToRaw("bad\033[2J"))
  expect_identical(v$message, "bad\033[2J")
  expect_output(print(v), "bad^[[2J", fixed = TRUE)
})

test_that("the pending set stays hashed when it is compacted", {
  # list2env() alone made the few live tasks an unhashed frame, in which each
  # of the next 4,096 assign()s searched every dead entry before it
  p <- hako:::new_link("test", rawConnection(raw(), "rb"))
  on.exit(close(p$con))
  assign("1", "live", envir = p$pending)
  assign("2", "taken", envir = p$pending)
  p$dead <- 4095L
  expect_equal(hako:::pending_take(p, "2"), "taken")
  expect_equal(p$dead, 0L)
  expect_equal(ls(p$pending), "1")
  expect_false(is.null(env.profile(p$pending)))
})
