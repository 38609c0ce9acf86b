# Link framing (host/PROTOCOL.md, "Client link"): length-prefixed frames
# `len:u32le type:u8 body` over the loopback socket to the `hako host` or
# `hako client` child, and the polling that reads them.
#
# Reading is non-blocking: the socket is opened with blocking = FALSE, every
# read drains all that is available into our own buffer (R's socket
# connections keep a private 4 KiB buffer that socketSelect() cannot see),
# and frames are parsed from that buffer. socketSelect() only decides whether
# to wait; unresolved() never blocks.

LINK_VERSION <- 1L

# message types, R -> hako
T_HELLO <- 0x00
T_TASK <- 0x01
T_CANCEL <- 0x02
T_EVERYWHERE <- 0x03
T_INFO <- 0x04
T_SHUTDOWN <- 0x06
T_TASK_REPLICAS <- 0x07
# hako -> R
T_READY <- 0x80
T_RESULT <- 0x81
T_ACK <- 0x82
T_INFO_REPLY <- 0x83
T_PONG <- 0x85
T_NOTICE <- 0x8F

u32 <- function(x) writeBin(as.integer(x), raw(), size = 4L, endian = "little")
rd_u32 <- function(b, at) {
  v <- sum(as.numeric(b[at:(at + 3L)]) * c(1, 256, 65536, 16777216))
  if (v < 2147483648) as.integer(v) else v
}

raw_text <- function(b) {
  if (!length(b)) return("")
  b <- b[b != as.raw(0L)]
  s <- rawToChar(b)
  Encoding(s) <- "UTF-8"
  s
}

parse_kv <- function(lines) {
  lines <- lines[nzchar(lines)]
  kv <- strsplit(lines, "\t", fixed = TRUE)
  keys <- vapply(kv, `[`, "", 1L)
  vals <- vapply(kv, function(x) paste(x[-1L], collapse = "\t"), "")
  stats::setNames(as.list(vals), keys)
}

send_frame <- function(p, type, body = raw()) {
  if (!p$alive) stop_dead(p)
  ok <- tryCatch(suspendInterrupts({
    writeBin(c(u32(length(body) + 1L), as.raw(type), body), p$con)
    TRUE
  }), error = function(e) FALSE)
  if (!ok) {
    mark_dead(p, "the link to the hako host broke")
    stop_dead(p)
  }
  invisible(TRUE)
}

# Several frames in one write (already framed).
send_raw <- function(p, bytes) {
  if (!p$alive) stop_dead(p)
  ok <- tryCatch(suspendInterrupts({ writeBin(bytes, p$con); TRUE }), error = function(e) FALSE)
  if (!ok) {
    mark_dead(p, "the link to the hako host broke")
    stop_dead(p)
  }
  invisible(TRUE)
}

frame <- function(type, body) c(u32(length(body) + 1L), as.raw(type), body)

# Read everything available. Returns FALSE at end of stream.
# readBin() allocates the size it is asked for (64 KiB costs ~20 us even
# when nothing comes), so reads start small and grow; a short read means
# nothing more is waiting.
drain <- function(p) {
  size <- 4096L
  repeat {
    b <- tryCatch(readBin(p$con, "raw", size), error = function(e) NULL)
    if (is.null(b)) return(FALSE)
    if (length(b)) {
      p$chunks[[length(p$chunks) + 1L]] <- b
      p$nchunk <- p$nchunk + length(b)
    }
    if (length(b) < size) return(TRUE)
    size <- min(size * 4L, 1048576L)
  }
}

consolidate <- function(p) {
  rest <- if (p$pos <= length(p$buf)) p$buf[p$pos:length(p$buf)] else raw()
  p$buf <- c(rest, unlist(p$chunks, use.names = FALSE))
  p$pos <- 1L
  p$chunks <- list()
  p$nchunk <- 0L
}

# Parse and handle every complete frame in the buffer; returns the count.
parse_frames <- function(p) {
  n <- 0L
  repeat {
    inbuf <- length(p$buf) - p$pos + 1L
    if (inbuf + p$nchunk < 4L) break
    if (inbuf < 4L) { consolidate(p); inbuf <- length(p$buf) }
    len <- rd_u32(p$buf, p$pos)
    need <- 4L + len
    if (inbuf + p$nchunk < need) break
    if (inbuf < need) consolidate(p)
    type <- as.integer(p$buf[p$pos + 4L])
    body <- if (len > 1L) p$buf[(p$pos + 5L):(p$pos + 3L + len)] else raw()
    p$pos <- p$pos + need
    handle_frame(p, type, body)
    n <- n + 1L
  }
  if (p$pos > length(p$buf)) { p$buf <- raw(); p$pos <- 1L }
  n
}

# Wait up to `timeout` seconds for frames and handle all that arrived.
# Only the wait can be interrupted (Ctrl-C): reading and handling frames
# runs with interrupts held back, so that an interrupt never loses a frame
# or leaves the buffer mid-frame.
poll <- function(p, timeout = 0) {
  if (!p$alive) return(0L)
  n <- suspendInterrupts(parse_frames(p))
  if (n > 0L) timeout <- 0
  ready <- tryCatch(socketSelect(list(p$con), write = FALSE, timeout = timeout), error = function(e) NA)
  if (is.na(ready)) { mark_dead(p, "the link to the hako host broke"); return(n) }
  if (!ready) return(n)
  suspendInterrupts(read_frames(p, n))
}

# The socket is readable: drain it and handle the frames.
read_frames <- function(p, n) {
  before <- p$nchunk
  ok <- drain(p)
  if (!ok || p$nchunk == before) {
    # readable but nothing to read: the host closed the link
    n <- n + parse_frames(p)
    mark_dead(p, paste(c("the hako host closed the link", p$notices), collapse = ": "))
    return(n)
  }
  n + parse_frames(p)
}

handle_frame <- function(p, type, body) {
  if (type == T_RESULT) {
    deliver(p, body)
  } else if (type == T_ACK) {
    assign(as.character(rd_u32(body, 1L)), rd_u32(body, 5L), envir = p$acks)
  } else if (type == T_INFO_REPLY) {
    p$info <- raw_text(body)
  } else if (type == T_READY) {
    p$ready <- parse_kv(strsplit(raw_text(body), "\n", fixed = TRUE)[[1L]])
  } else if (type == T_NOTICE) {
    txt <- safe_text(raw_text(body))
    p$notices <- c(utils::tail(p$notices, 20L), txt)
    if (isTRUE(getOption("hako.verbose"))) message("hako host: ", txt)
  }
  invisible()
}

task_frame <- function(id, timeout_ms, payload, replicas = 0L) {
  if (replicas > 0L) {
    # len:u32 type:u8 id:u32 timeout_ms:u32 replicas:u32 payload
    h <- writeBin(c(length(payload) + 13L, as.integer(id), as.integer(timeout_ms), as.integer(replicas)),
                  raw(), size = 4L, endian = "little")
    return(c(h[1:4], as.raw(T_TASK_REPLICAS), h[5:16], payload))
  }
  # len:u32 type:u8 id:u32 timeout_ms:u32 payload, the integers in one go
  h <- writeBin(c(length(payload) + 9L, as.integer(id), as.integer(timeout_ms)), raw(), size = 4L, endian = "little")
  c(h[1:4], as.raw(T_TASK), h[5:12], payload)
}

