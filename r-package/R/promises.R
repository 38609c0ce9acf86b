#' Make a promise from a 'hako'
#'
#' With \pkg{promises} (and \pkg{later}) installed, `promises::as.promise()`
#' turns a 'hako' into a promise, so `hako(...) %...>% f()` works in Shiny
#' and plumber. The promise is fulfilled with the value, or rejected with an
#' error carrying the message of an error value. The link is polled from
#' \pkg{later}'s event loop.
#'
#' @param x A 'hako'.
#' @return A promise.
#' @examples
#' \dontrun{
#' library(promises)
#' daemons(1)
#' hako(1 + 1) %...>% print()
#' later::run_now(1)
#' }
#' @name as.promise.hako
#' @exportS3Method promises::as.promise
as.promise.hako <- function(x) {
  if (!requireNamespace("promises", quietly = TRUE) || !requireNamespace("later", quietly = TRUE)) {
    stop("hako: as.promise() needs the packages 'promises' and 'later'", call. = FALSE)
  }
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
