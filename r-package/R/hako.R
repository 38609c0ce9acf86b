#' Evaluate an expression asynchronously in a sandbox
#'
#' Sends `.expr` to the sandboxed daemons of a compute profile and returns at
#' once a 'hako' object, resolved when a daemon has evaluated it.
#'
#' `.expr` is evaluated in a fresh environment whose parent is the sandbox's
#' global environment, with `.args` bound in it; objects given in `...` are
#' assigned in the sandbox's global environment (so that functions sent
#' along find them). Each task starts from a pristine R (unless the daemons
#' run with `keep_state`), with its own L'Ecuyer-CMRG random number stream
#' derived from `daemons(seed = )`.
#'
#' The value is read with `x[]` (waits; interruptible), `x$data` (the value,
#' or an 'unresolved' NA while it runs), [call_hako()] or [collect_hako()].
#' Interrupting a wait (Ctrl-C) only stops waiting, as in mirai: the task
#' goes on and its value can be read later; [stop_hako()] cancels it.
#' An error in the task resolves to a 'hakoError' (see [is_error_value()]):
#' it is a value, not signalled. Output the task writes (stdout, stderr,
#' messages and warnings) is relayed in this session when the result arrives.
#'
#' @param .expr An expression to evaluate in the sandbox (of any length,
#'   wrapped in `{}` where necessary), or a variable holding a language object
#'   or expression vector.
#' @param ... Named objects the expression refers to, assigned in the
#'   sandbox's global environment; or a single environment whose objects are.
#' @param .args A named list of objects bound in the evaluation environment.
#' @param .timeout Timeout of the evaluation in milliseconds (`NULL`: the
#'   profile's default from [daemons()], otherwise none); on expiry the task
#'   is interrupted and resolves to errorValue 5.
#' @param .compute The compute profile (`NULL`: "default", or the one set by
#'   `with(daemons(...), ...)`).
#' @return A 'hako' object (an environment).
#' @examples
#' \dontrun{
#' daemons(2)
#' m <- hako(x + y, x = 1, .args = list(y = 2))
#' m[]
#' daemons(0)
#' }
#' @export
hako <- function(.expr, ..., .args = list(), .timeout = NULL, .compute = NULL) {
  expr <- substitute(.expr)
  expr <- task_expr(expr, parent.frame())
  p <- get_profile(.compute)
  g <- dots_globals(...)
  if (!is.list(.args) || (length(.args) && (is.null(names(.args)) || any(!nzchar(names(.args)))))) {
    stop("hako: '.args' must be a named list", call. = FALSE)
  }
  submit(p, expr, a = .args, g = g, timeout = .timeout)
}

task_expr <- function(expr, env) {
  if (is.symbol(expr) && nzchar(as.character(expr))) {
    nm <- as.character(expr)
    if (exists(nm, envir = env)) {
      v <- get(nm, envir = env)
      if (is.language(v) || is.expression(v)) expr <- v
    }
  }
  if (is.expression(expr)) expr <- as.call(c(as.name("{"), as.list(expr)))
  ok <- is.language(expr) || (is.atomic(expr) && length(expr) <= 1L) || is.null(expr)
  if (!ok) {
    stop(sprintf("hako: '.expr' must be an expression or a language object, not %s (quote() it, or pass data in '...' or '.args')",
                 if (is.function(expr)) "a function" else paste("an object of class", paste(class(expr), collapse = "/"))),
         call. = FALSE)
  }
  expr
}

dots_globals <- function(...) {
  g <- list(...)
  if (length(g) == 1L && is.environment(g[[1L]]) && (is.null(names(g)) || !nzchar(names(g)))) {
    return(as.list(g[[1L]], all.names = TRUE))
  }
  if (length(g) && (is.null(names(g)) || any(!nzchar(names(g))))) {
    stop("hako: the objects in '...' must be named (name = value), or a single environment", call. = FALSE)
  }
  g
}

next_seed <- function(p) {
  s <- p$seed
  p$seed <- parallel::nextRNGStream(s)
  s
}

submit <- function(p, expr, a = NULL, g = NULL, timeout = NULL, pk = NULL, relay = TRUE, seed = NULL) {
  if (is.null(seed)) seed <- next_seed(p) else if (isFALSE(seed)) seed <- NULL
  payload <- task_payload(expr, a = a, g = g, seed = seed, pk = pk)
  check_size(p, payload)
  id <- new_id(p)
  x <- new_hako(p, id, relay)
  # registered and sent together: an interrupt in between would leave a
  # task waited for that was never sent
  suspendInterrupts({
    assign(as.character(id), x, envir = p$pending)
    send_raw(p, task_frame(id, timeout_ms(p, timeout), payload))
  })
  x
}

new_hako <- function(p, id, relay = TRUE) {
  x <- new.env(parent = emptyenv())
  x$p <- p
  x$id <- id
  x$resolved <- FALSE
  x$value <- NULL
  x$relay <- relay
  makeActiveBinding("data", function() {
    if (!x$resolved) poll(x$p, 0)
    if (x$resolved) x$value else unresolved_value()
  }, x)
  class(x) <- "hako"
  x
}

wait_hako <- function(x) {
  while (!x$resolved) {
    if (!x$p$alive) fail_all(x$p, x$p$why)
    poll(x$p, 0.5)
  }
  invisible(x)
}

#' @export
`[.hako` <- function(x, i) {
  wait_hako(x)
  x$value
}

#' @export
print.hako <- function(x, ...) {
  if (!x$resolved) poll(x$p, 0)
  cat(if (x$resolved) "< hako [$data] >\n" else "< hako [] >\n")
  invisible(x)
}

#' Wait for and collect results
#'
#' `call_hako()` waits for a 'hako' (or each of a list of them) and returns it
#' (so `call_hako(x)$data` is the value). `collect_hako()` waits and returns
#' the value itself (or a list of values). Both are interruptible; an
#' interrupt leaves the task running.
#'
#' @param x A 'hako', a 'hako_map', or a list of 'hako' objects.
#' @param options For 'hako_map' objects: options as for `x[...]`, e.g.
#'   `".flat"`, `".progress"`, `".stop"`.
#' @return `call_hako()`: `x`, invisibly... resolved. `collect_hako()`: the
#'   value(s).
#' @examples
#' \dontrun{
#' daemons(1)
#' m <- hako(Sys.sleep(0.1))
#' call_hako(m)$data
#' collect_hako(list(hako(1), hako(2)))
#' daemons(0)
#' }
#' @export
call_hako <- function(x) {
  if (inherits(x, "hako")) return(wait_hako(x))
  if (inherits(x, "hako_map")) { x[]; return(invisible(x)) }
  if (is.list(x)) { for (e in x) call_hako(e); return(invisible(x)) }
  invisible(x)
}

#' @rdname call_hako
#' @export
collect_hako <- function(x, options = NULL) {
  if (inherits(x, "hako")) return(x[])
  if (inherits(x, "hako_map")) return(collect_map(x, options))
  if (is.list(x)) return(lapply(x, collect_hako))
  x
}

#' Stop a task
#'
#' Cancels a 'hako' (or every unresolved task of a 'hako_map', or of a list
#' of them): a queued task is removed, a running one is interrupted in its
#' sandbox. It resolves at once to errorValue 20 (also a 'hakoInterrupt').
#'
#' @param x A 'hako', a 'hako_map' or a list of them.
#' @return Invisibly, `TRUE` if something was cancelled.
#' @examples
#' \dontrun{
#' daemons(1)
#' m <- hako(Sys.sleep(60))
#' stop_hako(m)
#' m[]
#' daemons(0)
#' }
#' @export
stop_hako <- function(x) {
  if (inherits(x, "hako")) {
    if (x$resolved) return(invisible(FALSE))
    p <- x$p
    pending_take(p, as.character(x$id))
    if (p$alive) try(send_frame(p, T_CANCEL, u32(x$id)), silent = TRUE)
    resolve(x, mk_interrupt("cancelled by stop_hako()"))
    return(invisible(TRUE))
  }
  if (inherits(x, "hako_map")) return(invisible(cancel_batch(x$p, x$b)))
  if (is.list(x)) return(invisible(any(vapply(x, stop_hako, NA))))
  invisible(FALSE)
}
