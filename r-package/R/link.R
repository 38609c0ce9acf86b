# The client link (host/PROTOCOL.md, "Client link"): length-prefixed frames
# over a loopback socket to a `hako host` or `hako client` child process.
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

# Start a `hako` command in the background; returns its pid.
# system2(wait = FALSE) gives no pid, so a shell starts it and echoes $!.
# `--new-session` puts it in a session of its own: the terminal's signals
# (Ctrl-C in this session) do not reach it. It closes every descriptor it
# inherits above stderr at start-up, so it holds no socket of this session;
# and with `--watch-pid` it exits when this session's process is gone, even
# if another child of this session still holds the link.
spawn <- function(cmd, args, log) {
  args <- c(args, "--new-session", "--watch-pid", Sys.getpid())
  line <- paste(c(shQuote(cmd), vapply(args, shQuote, "")), collapse = " ")
  sh <- sprintf("%s </dev/null >>%s 2>&1 & echo $!", line, shQuote(log))
  out <- suppressWarnings(system2("/bin/sh", c("-c", shQuote(sh)), stdout = TRUE, stderr = FALSE))
  pid <- suppressWarnings(as.integer(out[length(out)]))
  if (!length(pid) || is.na(pid)) stop("hako: could not start ", cmd, call. = FALSE)
  pid
}

pid_alive <- function(pid) {
  !is.null(pid) && !is.na(pid) && isTRUE(suppressWarnings(tools::pskill(pid, 0L)))
}

log_tail <- function(log, n = 15L) {
  if (!file.exists(log)) return("")
  l <- readLines(log, warn = FALSE)
  safe_text(paste(utils::tail(l, n), collapse = "\n"))
}

# Start the child (`hako host ...` or `hako client ...`), connect and
# exchange HELLO / READY. Returns the profile environment, ready to use.
link_open <- function(name, args, env = character()) {
  bin <- hako_binary()
  dir <- tempfile("hako-")
  dir.create(dir, mode = "0700")
  link_file <- file.path(dir, "link")
  log <- file.path(dir, "host.log")
  args <- c(args, "--link", "127.0.0.1:0", "--link-file", link_file)
  old <- Sys.getenv(names(env), unset = NA, names = TRUE)
  if (length(env)) {
    do.call(Sys.setenv, as.list(env))
    on.exit(for (k in names(old)) if (is.na(old[[k]])) Sys.unsetenv(k) else do.call(Sys.setenv, stats::setNames(list(old[[k]]), k)), add = TRUE)
  }
  pid <- spawn(bin, args, log)
  deadline <- Sys.time() + getOption("hako.start_timeout", 120)
  while (!file.exists(link_file)) {
    if (!pid_alive(pid) || Sys.time() > deadline) {
      if (pid_alive(pid)) tools::pskill(pid, tools::SIGKILL)
      stop(sprintf("hako: `hako %s` did not start; its log says:\n%s", args[[1L]], log_tail(log)), call. = FALSE)
    }
    Sys.sleep(0.02)
  }
  ready <- parse_kv(readLines(link_file, warn = FALSE))
  addr <- strsplit(ready[["link"]], ":", fixed = TRUE)[[1L]]
  con <- socketConnection(addr[[1L]], as.integer(addr[[2L]]), open = "a+b", blocking = FALSE, timeout = 60)
  p <- new.env(parent = emptyenv())
  p$name <- name
  p$con <- con
  p$pid <- pid
  p$dir <- dir
  p$log <- log
  p$alive <- TRUE
  p$buf <- raw()
  p$pos <- 1L
  p$chunks <- list()
  p$nchunk <- 0L
  p$next_id <- 0L
  p$pending <- new.env(parent = emptyenv())
  p$dead <- 0L
  p$batches <- list()
  p$acks <- new.env(parent = emptyenv())
  p$info <- NULL
  p$notices <- character()
  p$output <- TRUE
  p$launched <- integer()
  send_frame(p, T_HELLO, c(charToRaw("HAKO"), u32(LINK_VERSION), charToRaw(ready[["link_token"]])))
  while (is.null(p$ready)) {
    poll(p, 1)
    if (!p$alive || Sys.time() > deadline) {
      link_close(p)
      stop(sprintf("hako: no READY from `hako %s`: %s\n%s", args[[1L]],
                   paste(p$notices, collapse = "; "), log_tail(log)), call. = FALSE)
    }
  }
  p$max_payload <- as.numeric(p$ready[["max_payload"]])
  p
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

stop_dead <- function(p) {
  stop(sprintf("hako: the daemons of compute profile '%s' are gone (%s); call daemons(0, .compute = \"%s\") and set them up again",
               p$name, if (is.null(p$why)) "host exited" else p$why, p$name), call. = FALSE)
}

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

# A RESULT frame: find who waits for it and resolve.
deliver <- function(p, b) {
  id <- rd_u32(b, 1L)
  status <- as.integer(b[5L])
  nch <- rd_u32(b, 6L)
  at <- 10L
  chunks <- NULL
  if (nch > 0L) {
    chunks <- vector("list", nch)
    for (j in seq_len(nch)) {
      l <- rd_u32(b, at + 1L)
      chunks[[j]] <- list(stream = as.integer(b[at]), text = if (l > 0L) raw_text(b[(at + 5L):(at + 4L + l)]) else "")
      at <- at + 5L + l
    }
  }
  payload <- if (at <= length(b)) b[at:length(b)] else raw()
  target <- pending_take(p, as.character(id))
  batch <- NULL
  if (is.null(target)) {
    for (bt in p$batches) if (id >= bt$lo && id <= bt$hi) { batch <- bt; break }
    if (is.null(batch)) return(invisible()) # cancelled or unknown: dropped
  }
  relay <- if (is.null(target)) batch$relay else target$relay
  if (length(chunks) && p$output && !isFALSE(relay)) relay_output(chunks)
  value <- decode_value(status, payload)
  if (is.null(target)) {
    i <- id - batch$lo + 1L
    if (!batch$done_flags[i]) {
      batch_set(batch, i, value)
      batch$ndone <- batch$ndone + 1L
      if (batch$ndone == batch$n) p$batches <- Filter(function(x) !identical(x, batch), p$batches)
    }
  } else {
    resolve(target, value, chunks)
  }
  invisible()
}

# Element i of a map batch is done. The vectors are taken out of the batch
# environment while they change: `b$vals[i] <- v` inside a function copies
# the whole list each time, which made collecting a map quadratic.
batch_set <- function(b, i, value) {
  vals <- b$vals
  b$vals <- NULL
  vals[i] <- list(value)
  b$vals <- vals
  flags <- b$done_flags
  b$done_flags <- NULL
  flags[i] <- TRUE
  b$done_flags <- flags
  invisible()
}

# The task waiting for result `key`, taken out of the pending set. Taking
# assigns NULL (rm() costs ~13 us a call); the set is compacted once many
# entries are dead.
pending_take <- function(p, key) {
  t <- p$pending[[key]]
  if (!is.null(t)) {
    assign(key, NULL, envir = p$pending)
    p$dead <- p$dead + 1L
    if (p$dead >= 4096L) {
      live <- Filter(Negate(is.null), as.list(p$pending, all.names = TRUE))
      p$pending <- list2env(live, parent = emptyenv())
      p$dead <- 0L
    }
  }
  t
}

resolve <- function(target, value, chunks = NULL) {
  target$value <- value
  target$output <- chunks
  target$resolved <- TRUE
  cb <- target$callbacks
  target$callbacks <- NULL
  for (f in cb) f(value)
  invisible()
}

# A task's output, shown here with its terminal controls rendered visibly.
relay_output <- function(chunks) {
  for (ch in chunks) {
    text <- safe_text(ch$text)
    switch(as.character(ch$stream),
      "0" = cat(text),
      "1" = cat(text, file = stderr()),
      "2" = message(sub("\n$", "", text)),
      "3" = warning(sub("^Warning( in .*? :|:) ", "", sub("\n$", "", text)), call. = FALSE, immediate. = FALSE),
      cat(text)
    )
  }
}

decode_value <- function(status, payload) {
  switch(as.character(status),
    "0" = ,
    "1" = tryCatch(unserialize(payload), error = function(e) {
      mk_hako_error(paste("the result could not be unserialized in this session:", conditionMessage(e)), "hakoUnserializeError")
    }),
    "2" = mk_error_value(5L, raw_text(payload)),
    "3" = mk_interrupt(raw_text(payload)),
    "4" = mk_error_value(19L, raw_text(payload)),
    "5" = mk_hako_error(raw_text(payload), "hakoMemoryLimit"),
    "6" = mk_hako_error(raw_text(payload), "hakoOutputLimit"),
    "7" = mk_hako_error(raw_text(payload), "hakoCrashed"),
    "8" = mk_error_value(19L, raw_text(payload)),
    "9" = mk_hako_error(raw_text(payload), "hakoRejected"),
    # the host's result verifier refused what the sandbox sent: never read
    "10" = mk_hako_error(raw_text(payload), "hakoRefused"),
    mk_hako_error(sprintf("unknown result status %d: %s", status, raw_text(payload)), "hakoProtocolError")
  )
}

# The host is gone: every task still waiting resolves to errorValue 19.
mark_dead <- function(p, why) {
  if (!p$alive) return(invisible())
  p$alive <- FALSE
  p$why <- why
  try(close(p$con), silent = TRUE)
  fail_all(p, why)
  invisible()
}

fail_all <- function(p, why) {
  v <- mk_error_value(19L, why)
  waiting <- as.list(p$pending, all.names = TRUE)
  p$pending <- new.env(parent = emptyenv())
  p$dead <- 0L
  for (t in waiting) if (!is.null(t)) resolve(t, v)
  for (bt in p$batches) {
    idx <- which(!bt$done_flags)
    bt$vals[idx] <- list(v)
    bt$done_flags[idx] <- TRUE
    bt$ndone <- bt$n
  }
  p$batches <- list()
}

link_close <- function(p) {
  if (p$alive) {
    try(writeBin(frame(T_SHUTDOWN, raw()), p$con), silent = TRUE)
    mark_dead(p, "daemons were reset")
  }
  for (pid in p$launched) if (pid_alive(pid)) try(tools::pskill(pid, tools::SIGTERM), silent = TRUE)
  invisible()
}

new_id <- function(p, n = 1L) {
  if (p$next_id + n >= .Machine$integer.max) p$next_id <- 0L
  lo <- p$next_id + 1L
  p$next_id <- p$next_id + as.integer(n)
  lo
}

# External pointers would arrive in the sandbox as NULL pointers: refuse
# them where they are data (in the arguments, in lists, as attributes). Those
# deep inside a closure's environment are not looked for (as with PSOCK).
has_extptr <- function(x, depth = 0L) {
  if (typeof(x) == "externalptr") return(TRUE)
  if (depth > 4L || is.null(x)) return(FALSE)
  a <- attributes(x)
  if (length(a) && any(vapply(a, has_extptr, NA, depth = depth + 1L))) return(TRUE)
  if (is.list(x) && length(x) && length(x) <= 10000L && !is.data.frame(x)) {
    return(any(vapply(x, has_extptr, NA, depth = depth + 1L)))
  }
  FALSE
}

check_extptr <- function(x) {
  if (length(x) && has_extptr(x)) {
    stop("hako: cannot send an external pointer (a connection, a compiled-code handle, an Rcpp/data.table/",
         "DBI object ...) to a sandbox: it would arrive as a NULL pointer. Send plain R data instead.", call. = FALSE)
  }
}

ser <- function(x) {
  check_extptr(x)
  tryCatch(serialize(x, NULL, version = 3L), error = unserializable)
}

unserializable <- function(e) stop("hako: the task could not be serialized: ", conditionMessage(e), call. = FALSE)

# Packages whose namespaces the functions among x (a list, looked into a
# few levels deep) are defined in. unserialize() would silently replace a
# namespace the sandbox lacks by the global environment, so the sandbox
# checks these first and fails with an error naming them.
needed_packages <- function(x, depth = 0L) {
  if (is.function(x)) {
    # a package's own function (its environment is the namespace); closures
    # made inside functions keep their own environments and are let through
    e <- environment(x)
    if (!is.null(e) && isNamespace(e)) return(unname(getNamespaceName(e)))
    return(character())
  }
  if (is.list(x) && depth < 3L && length(x) <= 1000L && !is.data.frame(x)) {
    return(unique(unlist(lapply(x, needed_packages, depth = depth + 1L), use.names = FALSE)))
  }
  character()
}

# Frame a task as the sandbox's task runner reads it: the packages the
# task's functions come from, checked there before the task itself (a nested
# serialize()) is unserialized, since unserialize() would silently put the
# global environment in place of a namespace the sandbox lacks.
# `g` may be a list or, for a map, the list serialize()d once for all tasks
# (its packages then come in `pk`, already without the sandbox's own).
task_payload <- function(expr, a = NULL, g = NULL, seed = NULL, pk = NULL, scan = TRUE) {
  more <- c(if (scan && length(a)) needed_packages(a), if (is.list(g)) needed_packages(g))
  if (length(more)) pk <- setdiff(unique(c(pk, more)), sandbox_packages())
  check_extptr(a)
  if (!is.raw(g)) check_extptr(g)
  tryCatch(task_bytes(expr, a, g, seed, pk), error = unserializable)
}

# The payload itself, unchecked (see PROTOCOL.md).
task_bytes <- function(expr, a, g, seed, pk) {
  inner <- serialize(list(expr = expr, args = a, globals = g, seed = seed), NULL, version = 3L)
  serialize(list(packages = as.character(pk), task = inner), NULL, version = 3L)
}

check_size <- function(p, payload) {
  lim <- p$max_payload
  if (is.finite(lim) && length(payload) > lim) {
    stop(sprintf("hako: the task is %.2f MiB serialized, larger than the host's bound of %.2f MiB (max_payload); send less data or start daemons(max_payload = )",
                 length(payload) / 1048576, lim / 1048576), call. = FALSE)
  }
}

task_frame <- function(id, timeout_ms, payload) {
  # len:u32 type:u8 id:u32 timeout_ms:u32 payload, the integers in one go
  h <- writeBin(c(length(payload) + 9L, as.integer(id), as.integer(timeout_ms)), raw(), size = 4L, endian = "little")
  c(h[1:4], as.raw(T_TASK), h[5:12], payload)
}

timeout_ms <- function(p, .timeout) {
  t <- if (is.null(.timeout)) p$timeout else .timeout
  if (is.null(t) || is.na(t) || t <= 0) return(0L)
  as.integer(min(max(1, round(t)), .Machine$integer.max))
}
