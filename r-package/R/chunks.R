# hako_map(.chunk = ): elements that need not be isolated from each other
# run in chunks, each chunk one task (one sandbox, reset after it), results
# and errors still per element. One task per element costs a reset and a
# round trip each; a chunk pays them once for all its elements.

# Elements per chunk: 0 for one task per element (the default, FALSE).
chunk_size <- function(chunk, n) {
  if (isFALSE(chunk) || is.null(chunk)) return(0L)
  if (isTRUE(chunk)) return(as.integer(max(1L, min(1000L, ceiling(n / 16)))))
  if (!is.numeric(chunk) || length(chunk) != 1L || is.na(chunk) || chunk < 1) {
    stop("hako: '.chunk' must be TRUE, FALSE or a number of elements per chunk", call. = FALSE)
  }
  as.integer(min(chunk, .Machine$integer.max))
}

# The task of one chunk: `expr` (the per-element call of hako_map(), with the
# element as .x) applied to each of .hako_xs in turn. No tryCatch() per
# element (in the sandbox's R one costs more than a trivial element): the
# loop runs under one, and an error ends it at element .hako_i, whose value
# becomes an error value as the task runner makes it (message, call,
# condition class and fields, the calls from the element's own call down);
# the loop then resumes at the next element.
chunk_expr <- function(expr) {
  bquote({
    .hako_n <- length(.hako_xs)
    .hako_out <- vector("list", .hako_n)
    .hako_i <- 0L
    .hako_calls <- NULL
    repeat {
      .hako_e <- tryCatch(withCallingHandlers({
        while (.hako_i < .hako_n) {
          .hako_i <- .hako_i + 1L
          .x <- .hako_xs[[.hako_i]]
          .hako_out[.hako_i] <- list(.(expr))
        }
        NULL
      }, error = function(e) .hako_calls <<- sys.calls()), error = function(e) e)
      if (is.null(.hako_e)) break
      .hako_call <- conditionCall(.hako_e)
      .hako_msg <- conditionMessage(.hako_e)
      .hako_v <- if (is.null(.hako_call)) paste("Error:", .hako_msg) else
        paste0("Error in ", paste(deparse(.hako_call, nlines = 1L, width.cutoff = 500L), collapse = ""), ": ", .hako_msg)
      .hako_f <- unclass(.hako_e)
      .hako_f$message <- NULL
      .hako_f$call <- NULL
      for (.hako_k in names(.hako_f)) if (nzchar(.hako_k)) attr(.hako_v, .hako_k) <- .hako_f[[.hako_k]]
      # the calls from the element's own call down to where it failed
      .hako_top <- which(vapply(.hako_calls, function(cl) identical(cl, quote(.(expr))), NA))
      .hako_end <- which(vapply(.hako_calls, function(cl) is.call(cl) && identical(cl[[1L]], quote(.handleSimpleError)), NA))
      .hako_top <- if (length(.hako_top)) max(.hako_top) else length(.hako_calls) + 1L
      .hako_end <- if (length(.hako_end)) min(c(.hako_end[.hako_end > .hako_top], length(.hako_calls) + 1L)) - 1L else length(.hako_calls)
      .hako_st <- if (.hako_end >= .hako_top) rev(lapply(.hako_calls[.hako_top:.hako_end], function(cl) {
        tryCatch(str2lang(paste(deparse(cl, width.cutoff = 500L, nlines = 50L), collapse = "\n")), error = function(e) NULL)
      })) else list()
      attr(.hako_v, "message") <- .hako_msg
      attr(.hako_v, "call") <- .hako_call
      attr(.hako_v, "condition.class") <- class(.hako_e)
      attr(.hako_v, "stack.trace") <- .hako_st
      class(.hako_v) <- c("hakoError", "errorValue", "try-error")
      .hako_out[[.hako_i]] <- .hako_v
      .hako_calls <- NULL
    }
    .hako_out
  })
}

# Sends a map's elements as chunks of `size`; the batch `b` learns which
# elements each chunk holds (its ids are the chunks').
send_chunks <- function(p, b, items, expr, g, pk, tms, size, replicas = 0L) {
  n <- b$n
  starts <- seq(1L, n, by = size)
  b$chunks <- lapply(starts, function(s) s:min(n, s + size - 1L))
  b$chunk_of <- rep(seq_along(starts), times = lengths(b$chunks))
  cexpr <- chunk_expr(expr)
  lo <- new_id(p, length(starts))
  b$lo <- lo
  b$hi <- lo + length(starts) - 1L
  p$batches[[length(p$batches) + 1L]] <- b
  for (k in seq_along(starts)) {
    xs <- items[b$chunks[[k]]]
    scan <- any(vapply(xs, function(it) !is.atomic(it) || !is.null(attributes(it)), NA))
    payload <- task_payload(cexpr, a = list(.hako_xs = xs), g = g, seed = next_seed(p), pk = pk, scan = scan)
    check_size(p, payload)
    send_raw(p, task_frame(lo + k - 1L, tms, payload, replicas))
    poll(p, 0)
  }
  invisible()
}

# The RESULT of chunk k: its list of values spread over its elements; any
# other outcome (a time limit, a crash, a refusal, cancelled) is each one's.
deliver_chunk <- function(p, b, k, value) {
  idx <- b$chunks[[k]]
  if (all(b$done_flags[idx])) return(invisible())
  vals <- if (is.list(value) && !is_error_value(value) && length(value) == length(idx)) value else rep(list(value), length(idx))
  all_vals <- b$vals
  b$vals <- NULL
  all_vals[idx] <- vals
  b$vals <- all_vals
  flags <- b$done_flags
  b$done_flags <- NULL
  flags[idx] <- TRUE
  b$done_flags <- flags
  b$ndone <- sum(flags)
  if (b$ndone == b$n) p$batches <- Filter(function(x) !identical(x, b), p$batches)
  invisible()
}
