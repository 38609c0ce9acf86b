# Results: a RESULT frame resolves the task (or map element) waiting for it
# and relays the task's output.

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
  value <- with_package_hint(decode_value(status, payload), p$name)
  if (is.null(target) && !is.null(batch$chunks)) {
    deliver_chunk(p, batch, id - batch$lo + 1L, value)
  } else if (is.null(target)) {
    i <- id - batch$lo + 1L
    if (!batch$done_flags[i]) {
      batch_set(batch, i, value)
      batch$ndone <- batch$ndone + 1L
      if (batch$ndone == batch$n) p$batches <- Filter(function(x) !identical(x, batch), p$batches)
    }
  } else if (is.function(target$each)) {
    target$each(value, chunks) # everywhere(): one RESULT per daemon
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
      # hashed: list2env() alone makes a small list an unhashed frame, in
      # which each of the next 4,096 assign()s searched every dead entry
      p$pending <- list2env(live, envir = new.env(hash = TRUE, parent = emptyenv()))
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

