#' Evaluate an expression on every daemon
#'
#' Evaluates `.expr` on every daemon connected now and on every daemon that
#' joins later, and (as daemons reset their sandbox between tasks) again
#' after each reset, so that what it sets up persists: assign into the
#' global environment (`x <<- 1`, `assign(..., envir = globalenv())`) or
#' attach packages (`library(stats4)`). Its value is discarded. The host
#' keeps everywhere() code for daemons that join later, up to a bound: past
#' it, everywhere() signals an error with the host's reason.
#'
#' @inheritParams hako
#' @param .timeout Seconds to wait for the host's acknowledgement.
#' @return Invisibly, the number of daemons it was sent to now.
#' @examples
#' \dontrun{
#' daemons(2)
#' everywhere(z <<- 10)
#' hako(z + 1)[]
#' daemons(0)
#' }
#' @export
everywhere <- function(.expr, ..., .args = list(), .compute = NULL, .timeout = 30) {
  expr <- task_expr(substitute(.expr), parent.frame())
  p <- get_profile(.compute)
  g <- dots_globals(...)
  # the expression runs in a child of globalenv: `<-` would stay local, so
  # evaluate it directly in the global environment.
  wrapped <- bquote(eval(quote(.(expr)), globalenv()))
  payload <- task_payload(wrapped, a = .args, g = g)
  check_size(p, payload)
  id <- new_id(p)
  key <- as.character(id)
  # the host refuses an everywhere() (e.g. past its bound on the code it
  # keeps) with a RESULT of the same id instead of the acknowledgement
  refusal <- new_hako(p, id, relay = FALSE)
  suspendInterrupts({
    assign(key, refusal, envir = p$pending)
    send_frame(p, T_EVERYWHERE, c(u32(id), payload))
  })
  on.exit(pending_take(p, key))
  deadline <- Sys.time() + .timeout
  while (!exists(key, envir = p$acks, inherits = FALSE)) {
    poll(p, 0.2)
    if (!p$alive) stop_dead(p)
    if (refusal$resolved) stop("hako: ", err_msg(refusal$value), call. = FALSE)
    if (Sys.time() > deadline) stop("hako: no acknowledgement of everywhere() from the host", call. = FALSE)
  }
  n <- get(key, envir = p$acks)
  rm(list = key, envir = p$acks)
  invisible(n)
}

