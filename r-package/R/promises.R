#' Make a promise from a 'hako' or a 'hako_map'
#'
#' With \pkg{promises} (and \pkg{later}) installed, `promises::as.promise()`
#' turns a 'hako' into a promise, so `hako(...) %...>% f()` works in Shiny
#' and plumber. The promise is fulfilled with the value, or rejected with an
#' error carrying the message of an error value. A 'hako_map' becomes, as in
#' mirai, one promise fulfilled with the list of values once all are done,
#' or rejected at the first element that fails. The link is polled from
#' \pkg{later}'s event loop.
#'
#' @param x A 'hako' or a 'hako_map'.
#' @return A promise.
#' @examples
#' \dontrun{
#' library(promises)
#' daemons(1)
#' hako(1 + 1) %...>% print()
#' hako_map(1:3, sqrt) %...>% print()
#' later::run_now(1)
#' }
#' @name as.promise.hako
#' @exportS3Method promises::as.promise
as.promise.hako <- function(x) {
  need_promises()
  promises::promise(function(resolve, reject) {
    settle <- function() {
      v <- x$value
      if (is_error_value(v)) reject(simpleError(err_msg(v))) else resolve(v)
    }
    check <- function() {
      if (!x$resolved) poll(x$p, 0)
      if (x$resolved) settle() else later::later(check, 0.01)
    }
    check()
  })
}

#' @rdname as.promise.hako
#' @exportS3Method promises::as.promise
as.promise.hako_map <- function(x) {
  need_promises()
  b <- x$b
  promises::promise(function(resolve, reject) {
    check <- function() {
      if (b$ndone < b$n) poll(x$p, 0)
      done <- which(b$done_flags)
      bad <- done[vapply(b$vals[done], is_error_value, NA)]
      if (length(bad)) {
        i <- min(bad)
        reject(simpleError(sprintf("hako_map: %s failed: %s", element_label(i, x$names), err_msg(b$vals[[i]]))))
      } else if (b$ndone >= b$n) {
        out <- b$vals
        if (!is.null(x$names)) names(out) <- x$names
        resolve(out)
      } else {
        later::later(check, 0.01)
      }
    }
    check()
  })
}

need_promises <- function() {
  if (!requireNamespace("promises", quietly = TRUE) || !requireNamespace("later", quietly = TRUE)) {
    stop("hako: promises need the packages 'promises' and 'later'", call. = FALSE)
  }
}

check_promise_arg <- function(.promise) {
  if (!length(.promise)) return(invisible())
  ok <- is.function(.promise) ||
    (is.list(.promise) && length(.promise) %in% 1:2 && all(vapply(.promise, function(f) is.null(f) || is.function(f), NA)))
  if (!ok) stop("hako: '.promise' must be a function or a list of two (onFulfilled, onRejected)", call. = FALSE)
  need_promises()
}

# hako_map(.promise = ): one promise per element, settled as its result
# arrives by a single poller on later's event loop, each with
# promises::then(onFulfilled, onRejected) as mirai registers them.
map_then <- function(x, .promise) {
  b <- x$b
  settlers <- vector("list", b$n)
  ps <- lapply(seq_len(b$n), function(i) promises::promise(function(resolve, reject) {
    settlers[[i]] <<- list(resolve = resolve, reject = reject)
  }))
  settled <- logical(b$n)
  check <- function() {
    if (b$ndone < b$n) poll(x$p, 0)
    for (i in which(b$done_flags & !settled)) {
      settled[i] <<- TRUE
      v <- b$vals[[i]]
      if (is_error_value(v)) settlers[[i]]$reject(simpleError(err_msg(v))) else settlers[[i]]$resolve(v)
    }
    if (!all(settled)) later::later(check, 0.01)
  }
  fns <- if (is.function(.promise)) list(.promise, NULL) else list(.promise[[1L]], if (length(.promise) > 1L) .promise[[2L]])
  for (pr in ps) promises::then(pr, onFulfilled = fns[[1L]], onRejected = fns[[2L]])
  check()
  invisible()
}
