#' Map a function over a vector, list or rows, in sandboxes
#'
#' Sends one task per element of `.x` (per row of a data frame or matrix,
#' whose elements are passed as arguments, like `purrr::pmap()`) and returns
#' at once a 'hako_map' object. Collect with `x[]` (a list), or with options:
#' `x[.flat]` (a vector; an error if any element failed or types differ), `x[.progress]` (a
#' progress bar: cli's when installed, text otherwise), `x[.stop]` (stops at
#' the first failure, cancelling the rest), combinable: `x[.stop, .progress]`.
#'
#' @param .x A vector or list, a data frame or a matrix.
#' @param .f A function.
#' @param ... Named objects `.f` refers to, assigned in the sandbox's global
#'   environment.
#' @param .args A named list (or an environment) of further constant
#'   arguments to `.f`.
#' @param .promise As in mirai: a function, or a list of two (`onFulfilled`,
#'   `onRejected`), registered with `promises::then()` against each element
#'   (needs \pkg{promises} and \pkg{later}): each is called from
#'   \pkg{later}'s event loop with that element's value, or an error
#'   carrying the message of its error value.
#' @param .timeout Timeout per element in milliseconds (with `.chunk`, per
#'   chunk).
#' @param .chunk `FALSE` (the default): every element runs in a sandbox of
#'   its own, reset to pristine. `TRUE` or a number of elements per chunk: for
#'   elements that need not be isolated from each other, the elements are
#'   sent in chunks, each chunk one task that applies `.f` to its elements in
#'   one sandbox, one after the other (what an element leaves in the global
#'   environment is seen by the next ones of its chunk); the sandbox is reset
#'   to pristine after each chunk, so nothing passes between chunks, maps or
#'   users. Results and errors are still per element; the output of a chunk
#'   is shown when it completes; random numbers come from one stream per
#'   chunk. `TRUE` makes up to 16 chunks of at most 1,000 elements.
#' @param .compute Compute profile (`NULL`: default).
#' @param .replicas As for [hako()]: each element's task (with `.chunk`,
#'   each chunk) runs on this many distinct daemons, which must return the
#'   same result.
#' @return A 'hako_map' object.
#' @examples
#' \dontrun{
#' daemons(2)
#' hako_map(1:3, function(x, k) x * k, .args = list(k = 10))[.flat]
#' hako_map(data.frame(a = 1:2, b = 3:4), function(a, b) a + b)[]
#' daemons(0)
#' }
#' @export
hako_map <- function(.x, .f, ..., .args = list(), .promise = NULL, .timeout = NULL, .chunk = FALSE,
                     .compute = NULL, .replicas = NULL) {
  p <- get_profile(.compute)
  k <- task_replicas(p, .replicas)
  size <- chunk_size(.chunk, NROW(.x))
  if (!is.function(.f)) stop("hako: '.f' must be a function", call. = FALSE)
  .args <- task_args(.args, "hako_map")
  check_promise_arg(.promise)
  g <- c(dots_globals(...), list(.f = .f, .hako_args = .args))
  if (is.data.frame(.x)) {
    n <- nrow(.x)
    cols <- as.list(.x)
    items <- lapply(seq_len(n), function(i) lapply(cols, function(cl) cl[[i]]))
    expr <- quote(do.call(.f, c(.x, .hako_args)))
    nms <- NULL
  } else if (is.matrix(.x)) {
    n <- nrow(.x)
    items <- lapply(seq_len(n), function(i) as.list(.x[i, ]))
    expr <- quote(do.call(.f, c(.x, .hako_args)))
    nms <- rownames(.x)
  } else {
    n <- length(.x)
    items <- if (is.list(.x)) .x else as.list(.x)
    # do.call() is a costly closure in the sandbox's R: call .f directly
    # when there are no extra arguments
    expr <- if (length(.args)) quote(do.call(.f, c(list(.x), .hako_args))) else quote(.f(.x))
    nms <- names(.x)
  }
  b <- new.env(parent = emptyenv())
  b$n <- n
  b$ndone <- 0L
  b$vals <- vector("list", n)
  b$done_flags <- logical(n)
  b$relay <- TRUE
  x <- structure(list(p = p, b = b, names = nms), class = "hako_map")
  if (n == 0L) return(x)
  tms <- timeout_ms(p, .timeout)
  pk <- setdiff(needed_packages(g), sandbox_packages())
  g <- ser(g)
  if (size > 0L) {
    send_chunks(p, b, items, expr, g, pk, tms, size, k)
    if (length(.promise)) map_then(x, .promise)
    return(x)
  }
  # the constant part (function, arguments, globals) is serialized once per task
  # but built once here; the payloads are checked, then sent in batches.
  seeds <- vector("list", n)
  for (i in seq_len(n)) seeds[[i]] <- next_seed(p)
  lo <- new_id(p, n)
  b$lo <- lo
  b$hi <- lo + n - 1L
  p$batches[[length(p$batches) + 1L]] <- b
  batch <- 512L
  for (start in seq(1L, n, by = batch)) {
    idx <- start:min(n, start + batch - 1L)
    frames <- lapply(idx, function(i) {
      item <- items[[i]]
      payload <- if (is.atomic(item) && is.null(attributes(item))) {
        # a plain vector: no external pointer, no package, nothing that can
        # fail to serialize, so none of task_payload()'s checks
        task_bytes(expr, list(.x = item), g, seeds[[i]], pk)
      } else {
        # only a list or a function can bring packages of its own
        task_payload(expr, a = list(.x = item), g = g, seed = seeds[[i]], pk = pk, scan = is.recursive(item))
      }
      if (i == 1L) check_size(p, payload)
      task_frame(lo + i - 1L, tms, payload, k)
    })
    send_raw(p, unlist(frames, use.names = FALSE))
    poll(p, 0)
  }
  if (length(.promise)) map_then(x, .promise)
  x
}

cancel_batch <- function(p, b) {
  idx <- which(!b$done_flags)
  if (!length(idx)) return(FALSE)
  v <- mk_interrupt("cancelled by stop_hako()")
  # a chunked map's ids are its chunks'
  ids <- if (is.null(b$chunks)) idx else unique(b$chunk_of[idx])
  if (p$alive) {
    try(send_raw(p, unlist(lapply(ids, function(i) frame(T_CANCEL, u32(b$lo + i - 1L))), use.names = FALSE)), silent = TRUE)
  }
  b$vals[idx] <- list(v)
  b$done_flags[idx] <- TRUE
  b$ndone <- b$n
  p$batches <- Filter(function(x) !identical(x, b), p$batches)
  TRUE
}

#' @export
print.hako_map <- function(x, ...) {
  if (x$b$ndone < x$b$n) poll(x$p, 0)
  cat(sprintf("< hako map [%d/%d] >\n", x$b$ndone, x$b$n))
  invisible(x)
}

#' Options for collecting a 'hako_map'
#'
#' Used inside `[` on a 'hako_map': `x[.flat]`, `x[.progress]`, `x[.stop]`.
#' @format A 'hako_option' object.
#' @name hako_map_options
#' @examples
#' \dontrun{
#' daemons(1)
#' hako_map(1:3, sqrt)[.flat, .progress]
#' daemons(0)
#' }
NULL

#' @rdname hako_map_options
#' @export
.flat <- structure("flat", class = "hako_option")
#' @rdname hako_map_options
#' @export
.progress <- structure("progress", class = "hako_option")
#' @rdname hako_map_options
#' @export
.stop <- structure("stop", class = "hako_option")

#' @export
`[.hako_map` <- function(x, ...) {
  pf <- parent.frame()
  args <- as.list(substitute(list(...)))[-1L]
  args <- args[!vapply(args, function(a) identical(a, quote(expr = )), NA)]
  opts <- vapply(args, function(a) as.character(unclass(eval(a, pf)))[[1L]], "")
  collect_map(x, opts)
}

# Collection options as given to x[...] or collect_hako(): a character
# vector, or (as in mirai) a named list or vector whose names are the
# options; the `.progress` value then names the progress bar.
map_options <- function(options) {
  nm <- names(options)
  opts <- if (length(nm) && all(nzchar(nm))) nm else as.character(unlist(options, use.names = FALSE))
  opts <- sub("^\\.", "", opts)
  bad <- setdiff(opts, c("flat", "progress", "stop"))
  if (length(bad)) stop("hako: unknown hako_map option(s): ", paste(bad, collapse = ", "), call. = FALSE)
  bar <- if (length(nm) && ".progress" %in% nm) options[[".progress"]]
  structure(opts, bar = if (is.character(bar) && length(bar) == 1L) bar)
}

collect_map <- function(x, options = NULL) {
  opts <- map_options(options)
  b <- x$b
  p <- x$p
  stop_early <- "stop" %in% opts
  bar <- if ("progress" %in% opts) progress_bar(b$n, attr(opts, "bar")) else NULL
  seen <- 0L
  on.exit(if (!is.null(bar)) bar$done())
  repeat {
    if (!is.null(bar) && b$ndone != seen) { seen <- b$ndone; bar$update(seen) }
    if (stop_early && b$ndone > 0L) {
      done <- which(b$done_flags)
      bad <- done[vapply(b$vals[done], is_error_value, NA)]
      if (length(bad)) {
        i <- min(bad)
        cancel_batch(p, b)
        stop(sprintf("hako_map: %s failed: %s", element_label(i, x$names), err_msg(b$vals[[i]])), call. = FALSE)
      }
    }
    if (b$ndone >= b$n) break
    if (!p$alive) fail_all(p, p$why) else poll(p, 0.2)
  }
  out <- b$vals
  if (!is.null(x$names)) names(out) <- x$names
  if ("flat" %in% opts) {
    bad <- which(vapply(out, is_error_value, NA))
    if (length(bad)) stop(sprintf("hako_map: cannot flatten: %s failed: %s", element_label(bad[[1L]], x$names), err_msg(out[[bad[[1L]]]])), call. = FALSE)
    out <- flatten(out, x$names)
  }
  out
}

# "element 2" or "element 2 ('b')": which one failed, by index and name.
element_label <- function(i, nms) {
  nm <- if (length(nms) >= i) nms[[i]] else ""
  if (!is.na(nm) && nzchar(nm)) sprintf("element %d (%s)", i, sQuote(safe_text(nm), FALSE)) else sprintf("element %d", i)
}

# x[.flat] as mirai: results of one type only (no silent coercion of 1 and
# "a" to strings), and of one class kept (Dates stay Dates, via c()).
flatten <- function(out, nms) {
  if (!length(out)) return(unlist(out))
  typ <- typeof(out[[1L]])
  cls <- oldClass(out[[1L]])
  for (i in seq_along(out)) {
    if (typeof(out[[i]]) != typ) {
      stop(sprintf("hako_map: cannot flatten outputs of differing type: %s / %s (%s)", typ, typeof(out[[i]]), element_label(i, nms)), call. = FALSE)
    }
    if (!identical(oldClass(out[[i]]), cls)) cls <- NULL
  }
  if (is.null(cls)) unlist(out, recursive = FALSE) else do.call(c, out)
}

# An error value's message as shown to the user (in R errors and promise
# rejections), its terminal controls rendered visibly.
err_msg <- function(v) {
  m <- attr(v, "message", exact = TRUE)
  if (!is.character(m) || length(m) != 1L || is.na(m)) m <- error_text(unclass(v)[[1L]])
  safe_text(m)
}

progress_bar <- function(n, name = NULL) {
  if (requireNamespace("cli", quietly = TRUE)) {
    id <- cli::cli_progress_bar(name = name, total = n, .envir = globalenv(), clear = TRUE)
    list(update = function(k) cli::cli_progress_update(id = id, set = k, .envir = globalenv()),
         done = function() cli::cli_progress_done(id = id, .envir = globalenv()))
  } else {
    pb <- utils::txtProgressBar(min = 0, max = max(1L, n), style = 3, file = stderr())
    list(update = function(k) utils::setTxtProgressBar(pb, k), done = function() close(pb))
  }
}
