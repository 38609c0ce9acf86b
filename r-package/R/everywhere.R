#' Evaluate an expression on every daemon
#'
#' Evaluates `.expr` once on every daemon connected now and on every daemon
#' that joins later. What it leaves behind (objects assigned in the global
#' environment, `x <<- 1` or `assign(..., envir = globalenv())`; attached
#' packages, `library(stats4)`; options) becomes part of the state each
#' daemon's sandbox returns to after every task, at no cost per task: a
#' task's own changes still go, `everywhere()`'s stay. Tasks sent after
#' `everywhere()` see its effects. The host keeps everywhere() code for
#' daemons that join later, up to a bound: past it, everywhere() signals an
#' error with the host's reason.
#'
#' As in mirai, the result is a 'hako_map' with one element per daemon it
#' was sent to now: the value of `.expr` there, or its error value. Unlike
#' mirai's, `everywhere()` waits for those outcomes (at most `.timeout`
#' milliseconds) and signals an R error of class 'hakoEverywhereError' when
#' `.expr` failed on any daemon (its `$results` is the map). As in mirai,
#' what `.expr` did before the error stays on that daemon. A daemon that has
#' not reported within `.timeout` (it runs the code after its current task)
#' is a warning, not an error: the code still runs there.
#'
#' @inheritParams hako
#' @param .min Wait (within `.timeout`) until at least this many daemons
#'   are connected before sending, as mirai's synchronization point for
#'   remote daemons that take time to connect.
#' @param .timeout Milliseconds to wait for every daemon's outcome (as
#'   every duration in hako's R API).
#' @return Invisibly, a 'hako_map' of the daemons' outcomes (collect it with
#'   `x[]` or `x[.flat]`).
#' @examples
#' \dontrun{
#' daemons(2)
#' everywhere(z <<- 10)
#' hako(z + 1)[]
#' everywhere(library(stats4))[]
#' try(everywhere(stop("nope")))
#' daemons(0)
#' }
#' @export
everywhere <- function(.expr, ..., .args = list(), .min = 1L, .compute = NULL, .timeout = 30000) {
  expr <- task_expr(substitute(.expr), parent.frame())
  p <- get_profile(.compute)
  if (!is.numeric(.min) || length(.min) != 1L || is.na(.min) || .min < 1) {
    stop("hako: everywhere()'s '.min' must be a number of daemons, at least 1", call. = FALSE)
  }
  g <- dots_globals(...)
  a <- task_args(.args, "everywhere")
  # the expression runs in a child of globalenv: `<-` would stay local, so
  # evaluate it directly in the global environment. With `.args` (local to
  # the evaluation, as in mirai) it runs in a scope that sees them, and what
  # it assigns there is then moved to the global environment.
  wrapped <- if (length(a)) {
    bquote(local({
      .hako_value <- eval(quote(.(expr)), environment())
      for (.hako_n in setdiff(ls(environment(), all.names = TRUE), c(".hako_value", ".hako_n"))) {
        assign(.hako_n, get(.hako_n, envir = environment(), inherits = FALSE), envir = globalenv())
      }
      .hako_value
    }))
  } else {
    bquote(eval(quote(.(expr)), globalenv()))
  }
  payload <- task_payload(wrapped, a = a, g = g)
  check_size(p, payload)
  if (!is.numeric(.timeout) || length(.timeout) != 1L || is.na(.timeout) || .timeout <= 0) {
    stop("hako: everywhere()'s '.timeout' must be a positive number of milliseconds", call. = FALSE)
  }
  deadline <- Sys.time() + .timeout / 1000
  wait_for_daemons(p, .min, deadline)
  id <- new_id(p)
  key <- as.character(id)
  col <- everywhere_collector(p, key)
  suspendInterrupts({
    assign(key, col, envir = p$pending)
    send_frame(p, T_EVERYWHERE, c(u32(id), payload))
  })
  on.exit({
    pending_take(p, key)
    if (exists(key, envir = p$acks, inherits = FALSE)) rm(list = key, envir = p$acks)
  })
  n <- NULL
  repeat {
    if (!is.null(col$refused)) stop("hako: ", err_msg(col$refused), call. = FALSE)
    if (is.null(n) && exists(key, envir = p$acks, inherits = FALSE)) n <- get(key, envir = p$acks)
    if (!is.null(n) && length(col$vals) >= n) break
    if (!p$alive) stop_dead(p)
    if (Sys.time() > deadline) {
      if (is.null(n)) stop("hako: no acknowledgement of everywhere() from the host", call. = FALSE)
      break
    }
    poll(p, 0.2)
  }
  vals <- col$vals
  late <- n - length(vals)
  if (late > 0L) {
    warning(sprintf("hako: everywhere(): %d of %d daemons did not report within %s ms (busy with a task?); the code still runs there",
                    late, n, format(.timeout)), call. = FALSE)
    vals <- c(vals, rep(list(mk_error_value(5L, "no outcome from this daemon within everywhere()'s .timeout")), late))
  }
  x <- everywhere_map(p, vals)
  bad <- which(vapply(col$vals, is_error_value, NA))
  if (length(bad)) {
    msg <- sprintf("hako: everywhere() failed on %d of %d daemons: %s", length(bad), n, err_msg(col$vals[[bad[[1L]]]]))
    stop(structure(class = c("hakoEverywhereError", "error", "condition"),
                   list(message = msg, call = NULL, results = x)))
  }
  invisible(x)
}

# Collects the RESULTs of one everywhere() id: before the host's
# acknowledgement, a RESULT is its refusal; after it, one daemon's outcome
# each (deliver() hands every one to `each`, which stays registered).
everywhere_collector <- function(p, key) {
  col <- new.env(parent = emptyenv())
  col$relay <- FALSE
  col$refused <- NULL
  col$vals <- list()
  col$each <- function(value, chunks) {
    if (exists(key, envir = p$acks, inherits = FALSE)) {
      col$vals[length(col$vals) + 1L] <- list(value)
    } else {
      col$refused <- value
    }
    assign(key, col, envir = p$pending)
    invisible()
  }
  col
}

# A resolved 'hako_map' of the outcomes, collected like any map.
everywhere_map <- function(p, vals) {
  b <- new.env(parent = emptyenv())
  b$n <- length(vals)
  b$ndone <- b$n
  b$vals <- vals
  b$done_flags <- rep(TRUE, b$n)
  b$relay <- FALSE
  structure(list(p = p, b = b, names = NULL), class = "hako_map")
}

# mirai's `.min`: a synchronization point for daemons still connecting.
wait_for_daemons <- function(p, min, deadline) {
  if (min <= 1) return(invisible())
  repeat {
    n <- query_info(p)$counters[["connections"]]
    if (n >= min) return(invisible())
    if (Sys.time() > deadline) {
      stop(sprintf("hako: everywhere(.min = %d): only %d daemons connected within .timeout", as.integer(min), n), call. = FALSE)
    }
    poll(p, 0.1)
  }
}
