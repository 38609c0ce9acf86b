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
#' Without daemons for `.compute`, as in mirai, the task runs in a daemon of
#' its own (a private host with one sandbox, about half a second to start)
#' that goes once the task has resolved; set [daemons()] to reuse daemons.
#'
#' An error in the task resolves to a 'hakoError' (see [is_error_value()]):
#' it is a value, not signalled. Output the task writes (stdout, stderr,
#' messages and warnings) is relayed in this session when the result arrives.
#'
#' @param .expr An expression to evaluate in the sandbox (of any length,
#'   wrapped in `{}` where necessary), or a variable holding a language object
#'   or expression vector.
#' @param ... Named objects the expression refers to, assigned in the
#'   sandbox's global environment; or a single environment whose objects are.
#' @param .args A named list (or an environment, whose objects are taken)
#'   of objects bound in the evaluation environment.
#' @param .timeout Timeout of the evaluation in milliseconds (`NULL`: the
#'   profile's default from [daemons()], otherwise none); on expiry the task
#'   is interrupted and resolves to errorValue 5.
#' @param .compute The compute profile (`NULL`: "default", or the one set by
#'   `with(daemons(...), ...)`).
#' @param .replicas Results checked by redundancy: the number of distinct
#'   daemons (1 to 5) that run the task and must return the same result
#'   (compared by a hash of its serialization; each replica draws the same
#'   random numbers). `NULL`: the profile's `daemons(replicas = )`, else the
#'   host's default (1). When they disagree, more replicas run (up to k + 2
#'   results), and without k identical results the task resolves to a
#'   'hakoError' of class "hakoDisagreed" saying which daemons gave which
#'   result. Each daemon's failures and disagreements show in [status()].
#' @return A 'hako' object (an environment).
#' @examples
#' \dontrun{
#' daemons(2)
#' m <- hako(x + y, x = 1, .args = list(y = 2))
#' m[]
#' daemons(0)
#' }
#' @export
hako <- function(.expr, ..., .args = list(), .timeout = NULL, .compute = NULL, .replicas = NULL) {
  expr <- substitute(.expr)
  expr <- task_expr(expr, parent.frame())
  g <- dots_globals(...)
  a <- task_args(.args)
  reap_ephemeral()
  if (is.null(.hako$profiles[[compute_name(.compute)]])) return(ephemeral_hako(expr, a, g, .timeout, .replicas))
  p <- get_profile(.compute)
  k <- task_replicas(p, .replicas)
  submit(p, expr, a = a, g = g, timeout = .timeout, replicas = k)
}

# Without daemons, as in mirai 2.x, a task runs in a daemon of its own
# that goes once the task has resolved: one host and one sandbox for this
# task alone (about half a second to start), reaped at the next hako() or
# wait after it resolved, or with the session.
ephemeral_hako <- function(expr, a, g, timeout, replicas = NULL) {
  k <- check_replicas(replicas)
  .hako$nephemeral <- if (is.null(.hako$nephemeral)) 1L else .hako$nephemeral + 1L
  name <- sprintf(".ephemeral%d", .hako$nephemeral)
  # as many sandboxes as the task has replicas
  daemons(if (is.null(k)) 1L else k, .compute = name)
  p <- .hako$profiles[[name]]
  p$ephemeral <- TRUE
  k <- task_replicas(p, k)
  x <- submit(p, expr, a = a, g = g, timeout = timeout, replicas = k)
  x$callbacks <- c(x$callbacks, list(function(v) p$done <- TRUE))
  x
}

# Closes the ephemeral daemons whose task has resolved.
reap_ephemeral <- function() {
  if (is.null(.hako$nephemeral)) return(invisible()) # none was ever started
  for (name in grep("^\\.ephemeral", ls(.hako$profiles, all.names = TRUE), value = TRUE)) {
    p <- .hako$profiles[[name]]
    if (p$alive && !isTRUE(p$done)) poll(p, 0)
    if (isTRUE(p$done) || !p$alive) reset_profile(name)
  }
  invisible()
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

# parallel::nextRNGStream, without `::`'s lookup for every task
next_rng_stream <- function(s) {
  f <- .hako$next_rng
  if (is.null(f)) f <- .hako$next_rng <- parallel::nextRNGStream
  f(s)
}

next_seed <- function(p) {
  s <- p$seed
  p$seed <- next_rng_stream(s)
  s
}

# `replicas`: the task's (0: the host's default); NULL: the profile's.
submit <- function(p, expr, a = NULL, g = NULL, timeout = NULL, pk = NULL, relay = TRUE, seed = NULL, replicas = NULL) {
  # decided here, not inside send_raw()'s error handler (which would take
  # an error of the argument for a broken link)
  if (is.null(replicas)) replicas <- task_replicas(p, NULL)
  if (is.null(seed)) seed <- next_seed(p) else if (isFALSE(seed)) seed <- NULL
  payload <- task_payload(expr, a = a, g = g, seed = seed, pk = pk)
  check_size(p, payload)
  id <- new_id(p)
  x <- new_hako(p, id, relay)
  # registered and sent together: an interrupt in between would leave a
  # task waited for that was never sent
  suspendInterrupts({
    assign(as.character(id), x, envir = p$pending)
    send_raw(p, task_frame(id, timeout_ms(p, timeout), payload, replicas))
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
  if (isTRUE(x$p$ephemeral)) reap_ephemeral()
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
#' @param options For a 'hako_map' or a list of 'hako': options as for
#'   `x[...]`, e.g. `".flat"` or `c(".stop", ".progress")`; or, as in mirai,
#'   a named list or vector whose names are the options, e.g.
#'   `c(.stop = TRUE, .progress = "bar name")` (the `.progress` value names
#'   the cli progress bar).
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
  if (is.list(x)) {
    if (!length(options)) return(lapply(x, collect_hako))
    opts <- map_options(options)
    out <- vector("list", length(x))
    bar <- if ("progress" %in% opts) progress_bar(length(x), attr(opts, "bar"))
    if (!is.null(bar)) on.exit(bar$done())
    for (i in seq_along(x)) {
      out[[i]] <- collect_hako(x[[i]])
      if (!is.null(bar)) bar$update(i)
      if ("stop" %in% opts && is_error_value(out[[i]])) {
        stop_hako(x)
        stop(sprintf("hako: %s failed: %s", element_label(i, names(x)), err_msg(out[[i]])), call. = FALSE)
      }
    }
    names(out) <- names(x)
    if ("flat" %in% opts) {
      bad <- which(vapply(out, is_error_value, NA))
      if (length(bad)) stop(sprintf("hako: cannot flatten: %s failed: %s", element_label(bad[[1L]], names(x)), err_msg(out[[bad[[1L]]]])), call. = FALSE)
      out <- flatten(out, names(x))
    }
    return(out)
  }
  x
}

#' Stop a task
#'
#' Cancels a 'hako' (or every unresolved task of a 'hako_map', or of a list
#' of them): a queued task is removed, a running one is interrupted in its
#' sandbox. It resolves at once to errorValue 20 (also a 'hakoInterrupt').
#'
#' @param x A 'hako', a 'hako_map' or a list of them.
#' @return Invisibly, `TRUE` if something was cancelled; for a 'hako_map' or
#'   a list, one such logical per element, as in mirai.
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
  if (inherits(x, "hako_map")) {
    out <- !x$b$done_flags
    cancel_batch(x$p, x$b)
    return(invisible(out))
  }
  if (is.list(x)) return(invisible(vapply(x, function(e) any(stop_hako(e)), NA)))
  invisible(FALSE)
}
