#' hako as a future backend
#'
#' `plan(hako::hako_multisession, workers = 2)` evaluates futures on a
#' private set of `workers` local sandboxed daemons (compute profile
#' "hako_multisession", started at the first future and kept until
#' `daemons(0, .compute = "hako_multisession")` or the end of the session).
#' `plan(hako::hako_cluster)` uses the daemons already set with [daemons()]
#' (argument `.compute` picks the profile), local or remote.
#'
#' Globals are found as by any future backend and assigned in the sandbox's
#' global environment. The sandbox has base R's packages
#' ([sandbox_packages()]) and those its daemons were given:
#' `plan(hako::hako_multisession, workers = 2, packages = c("furrr", "future"),
#' repos = "https://...")` gives the private daemons these packages as
#' [daemons()]`(packages = , repos = )` does (installing into hako's package
#' store what it lacks); for `hako_cluster`, those of `daemons(packages = )`.
#' (In `plan()`, `packages` is this set; for a single future it keeps
#' future's meaning, the packages the future attaches.) A future needing a
#' package the sandbox lacks fails with an error naming it and saying how to
#' add it. furrr needs `furrr` and `purrr` in the sandbox (its workers run
#' furrr's code), nested futures need `future`.
#' Standard output and conditions (messages, warnings, ...)
#' are captured in the sandbox and relayed by `value()` as future does;
#' `seed = TRUE` gives each future its L'Ecuyer-CMRG stream. Futures are
#' queued by the host (first in, first out), so creating one never blocks.
#' A daemon lost mid-future is retried by the host; once retries are spent,
#' on a timeout, and when the host refuses the result (unsafe or too large)
#' or the future crashed its daemon, `value()` signals a `FutureError` with
#' the host's reason.
#'
#' @param expr,envir,substitute,lazy,seed,globals,packages,stdout,conditions,label,... As for [future::future()].
#' @param workers Number of sandboxed daemons, or a function returning it
#'   (as for `future::multisession`): a single number >= 1.
#' @param repos Repositories to install missing packages of the set from
#'   (see [daemons()]).
#' @param .packages The daemons' package set: what `plan(hako_multisession,
#'   packages = )` sets (future does not let `plan()` set a future's own
#'   `packages`).
#' @param .compute Compute profile of the daemons (`NULL`: default).
#' @return A `HakoFuture` (a `Future`).
#' @examples
#' \dontrun{
#' library(future)
#' plan(hako::hako_multisession, workers = 2)
#' f <- future({ cat("hi\n"); Sys.getpid() })
#' value(f)
#' plan(hako::hako_multisession, workers = 2, packages = c("furrr", "future"),
#'      repos = "file:///path/to/repo")
#' furrr::future_map(1:4, sqrt)
#' plan(sequential)
#' }
#' @export
hako_multisession <- function(expr, envir = parent.frame(), substitute = TRUE, lazy = FALSE, seed = FALSE,
                              globals = TRUE, packages = NULL, stdout = TRUE, conditions = "condition",
                              label = NULL, ..., workers = 2L, repos = getOption("hako.repos"), .packages = NULL) {
  if (substitute) expr <- substitute(expr)
  workers <- future_workers(workers)
  ensure_future_daemons(workers, .packages, repos)
  f <- HakoFuture(expr, envir = envir, substitute = FALSE, lazy = lazy, seed = seed, globals = globals,
                  packages = packages, stdout = stdout, conditions = conditions, label = label,
                  compute = "hako_multisession", workers = workers, ...)
  if (!f$lazy) f <- future::run(f)
  f
}
class(hako_multisession) <- c("hako_multisession", "hako_future", "multiprocess", "future", "function")
attr(hako_multisession, "init") <- TRUE

#' @rdname hako_multisession
#' @export
hako_cluster <- function(expr, envir = parent.frame(), substitute = TRUE, lazy = FALSE, seed = FALSE,
                         globals = TRUE, packages = NULL, stdout = TRUE, conditions = "condition",
                         label = NULL, ..., .compute = NULL) {
  if (substitute) expr <- substitute(expr)
  f <- HakoFuture(expr, envir = envir, substitute = FALSE, lazy = lazy, seed = seed, globals = globals,
                  packages = packages, stdout = stdout, conditions = conditions, label = label,
                  compute = compute_name(.compute), ...)
  if (!f$lazy) f <- future::run(f)
  f
}
class(hako_cluster) <- c("hako_cluster", "hako_future", "multiprocess", "future", "function")
attr(hako_cluster, "init") <- TRUE

# plan(hako_multisession, packages = ) names the daemons' package set:
# future refuses to let plan() set a future's `packages`, so it becomes
# `.packages` before future's own tweak().
#' @exportS3Method future::tweak
tweak.hako_multisession <- function(strategy, ..., penvir = parent.frame()) {
  args <- list(...)
  if ("packages" %in% names(args)) {
    args[[".packages"]] <- args[["packages"]]
    args[["packages"]] <- NULL
  }
  cls <- class(strategy)
  class(strategy) <- setdiff(cls, "hako_multisession")
  out <- do.call(future::tweak, c(list(strategy), args, list(penvir = penvir)))
  class(out) <- unique(c("tweaked", cls))
  out
}

# future's rules for `workers`: a function is called for the number; the
# number must be a single finite numeric >= 1 (TRUE, NA, "2" or 0 are errors).
future_workers <- function(workers) {
  if (is.function(workers)) workers <- workers()
  if (!is.numeric(workers) || length(workers) != 1L || is.na(workers) || !is.finite(workers) || workers < 1) {
    stop("hako: 'workers' must be a single number >= 1, or a function returning one (as for future::multisession)", call. = FALSE)
  }
  as.integer(workers)
}

ensure_future_daemons <- function(workers, packages = NULL, repos = NULL) {
  workers <- future_workers(workers)
  p <- .hako$profiles[["hako_multisession"]]
  same <- identical(p$packages, sort(unique(as.character(packages)))) && identical(p$repos, repos)
  if (!is.null(p) && p$alive && identical(p$n, workers) && same) return(invisible(p))
  if (!is.null(p)) reset_profile("hako_multisession")
  daemons(workers, packages = packages, repos = repos, .compute = "hako_multisession")
  invisible(.hako$profiles[["hako_multisession"]])
}

HakoFuture <- function(expr = NULL, envir = parent.frame(), substitute = TRUE, globals = TRUE, packages = NULL,
                       compute = "default", workers = NULL, ...) {
  if (!requireNamespace("future", quietly = TRUE)) stop("hako: the future backend needs the package 'future'", call. = FALSE)
  if (substitute) expr <- substitute(expr)
  gp <- future::getGlobalsAndPackages(expr, envir = envir, globals = globals)
  f <- future::Future(expr = gp$expr, envir = envir, substitute = FALSE, globals = gp$globals,
                      packages = unique(c(packages, gp$packages)), ...)
  f$compute <- compute
  f$workers <- workers
  class(f) <- c("HakoFuture", class(f))
  f
}

# Evaluated in the sandbox: the future's expression with its output and
# conditions captured, returned as a list that result() makes a FutureResult.
# The calls captured with an error name functions instead of holding them:
# a call made from a function object (the runner's handlers, do.call())
# carries that closure, byte code included, which the host refuses to
# return (see PROTOCOL.md, the safe subset).
FUTURE_TASK <- quote({
  .hako_started <- Sys.time()
  .hako_nofun <- function(x, depth = 0L) {
    if (is.function(x)) return(as.name("<function>"))
    if (!is.call(x) || depth > 50L) return(x)
    l <- as.list(x)
    for (i in seq_along(l)) {
      if (is.function(l[[i]])) l[i] <- list(as.name("<function>"))
      else if (is.call(l[[i]])) l[i] <- list(.hako_nofun(l[[i]], depth + 1L))
    }
    as.call(l)
  }
  .hako_rng0 <- globalenv()$.Random.seed
  .hako_con <- NULL
  if (!is.na(.hako_fstdout)) {
    .hako_con <- rawConnection(raw(0L), open = "w")
    sink(.hako_con, type = "output")
  }
  .hako_conds <- list()
  # future attaches the future's packages on the worker (a `%<-%` in the
  # expression is found so), not just loads them
  for (.hako_p in .hako_fpk) {
    if (!paste0("package:", .hako_p) %in% search()) {
      suppressPackageStartupMessages(library(.hako_p, character.only = TRUE))
    }
  }
  .hako_val <- tryCatch(
    withCallingHandlers(
      withVisible(eval(.hako_fx, new.env(parent = globalenv()))),
      condition = function(c) {
        if (inherits(c, "error")) {
          if (is.call(c$call)) c$call <- .hako_nofun(c$call)
          .hako_conds[[length(.hako_conds) + 1L]] <<- list(condition = c, calls = lapply(sys.calls(), .hako_nofun), signaled = 0L)
        } else if (length(.hako_fcc) && inherits(c, .hako_fcc)) {
          if (identical(c$call, quote(eval(.hako_fx, new.env(parent = globalenv()))))) c$call <- NULL
          if (is.call(c$call)) c$call <- .hako_nofun(c$call)
          .hako_conds[[length(.hako_conds) + 1L]] <<- list(condition = c, signaled = 0L)
          if (inherits(c, "message")) invokeRestart("muffleMessage")
          if (inherits(c, "warning")) invokeRestart("muffleWarning")
        }
      }
    ),
    error = function(e) NULL
  )
  .hako_out <- NULL
  if (!is.null(.hako_con)) {
    sink(type = "output")
    .hako_out <- rawToChar(rawConnectionValue(.hako_con))
    close(.hako_con)
    if (!isTRUE(.hako_fstdout)) .hako_out <- NULL
  }
  structure(list(value = .hako_val$value, visible = if (is.null(.hako_val)) TRUE else .hako_val$visible,
                 stdout = .hako_out, conditions = .hako_conds,
                 rng = !identical(globalenv()$.Random.seed, .hako_rng0),
                 started = .hako_started, finished = Sys.time()),
            class = "hako_future_result")
})

#' @exportS3Method future::run
run.HakoFuture <- function(future, ...) {
  if (future$state != "created") {
    stop(future::FutureError(sprintf("A future ('%s') can only be launched once.",
                                     if (is.null(future$label)) "<none>" else future$label), future = future))
  }
  p <- get_profile(future$compute)
  seed <- if (is.numeric(future$seed)) as.integer(future$seed) else FALSE
  stdout <- future$stdout
  if (is.null(stdout)) stdout <- TRUE
  a <- list(.hako_fx = future$expr, .hako_fcc = future$conditions, .hako_fstdout = stdout,
            .hako_fpk = as.character(future$packages))
  future$hako <- submit(p, FUTURE_TASK, a = a, g = as.list(future$globals), pk = setdiff(future$packages, sandbox_packages()),
                        relay = is.na(stdout), seed = seed)
  future$state <- "running"
  invisible(future)
}

#' @exportS3Method future::resolved
resolved.HakoFuture <- function(x, run = TRUE, timeout = NULL, ...) {
  if (!is.null(x$result)) return(TRUE)
  if (x$state == "created") {
    if (run) x <- future::run(x)
    return(FALSE)
  }
  !unresolved(x$hako)
}

#' @exportS3Method future::result
result.HakoFuture <- function(future, ...) {
  if (!is.null(future$result)) {
    if (inherits(future$result, "FutureError")) stop(future$result)
    return(future$result)
  }
  if (future$state == "created") future <- future::run(future)
  v <- future$hako[]
  label <- if (is.null(future$label)) "<none>" else future$label
  if (inherits(v, "hako_future_result")) {
    # value() writes the stdout and resignals the conditions: their terminal
    # controls are rendered visibly first
    stdout <- if (is.character(v$stdout)) safe_text(v$stdout) else v$stdout
    conds <- lapply(v$conditions, function(c) {
      if (is.list(c)) c$condition <- tryCatch(safe_condition(condition_with_hint(c$condition, future$compute)), error = function(e) c$condition)
      c
    })
    r <- future::FutureResult(value = v$value, visible = isTRUE(v$visible), stdout = stdout,
                              conditions = conds, rng = isTRUE(v$rng), started = v$started,
                              finished = v$finished)
  } else if (is_hako_error(v) && any(attr(v, "condition.class", exact = TRUE) %in% HOST_FAILURES)) {
    # the host refused or lost the result: not an error of the expression
    err <- future::FutureError(sprintf("HakoFuture (%s): %s", label, err_msg(v)), future = future)
    future$result <- err
    future$state <- "failed"
    stop(err)
  } else if (is_hako_error(v)) {
    # the task could not even start (e.g. a package the sandbox lacks):
    # an evaluation error, resignalled by value()
    cond <- simpleError(err_msg(v))
    r <- future::FutureResult(value = NULL, visible = TRUE, conditions = list(list(condition = cond, signaled = 0L)))
  } else {
    what <- switch(as.character(unclass(v)[[1L]]),
                   "5" = "timed out in its sandbox",
                   "19" = "lost its daemon (connection reset, retries spent) or the host went away",
                   "20" = "was cancelled",
                   "failed")
    err <- future::FutureError(sprintf("HakoFuture (%s) %s: %s", label, what, err_msg(v)), future = future)
    future$result <- err
    future$state <- "failed"
    stop(err)
  }
  future$result <- r
  future$state <- "finished"
  r
}

# hakoError classes of failures on the host's side (the result was refused
# as unsafe or too large, or its daemon crashed): FutureErrors, as for a
# lost worker, rather than errors of the future's expression.
HOST_FAILURES <- c("hakoRefused", "hakoRejected", "hakoCrashed", "hakoUnserializeError", "hakoProtocolError")

#' @exportS3Method future::nbrOfWorkers
nbrOfWorkers.hako_multisession <- function(evaluator) {
  w <- formals(evaluator)$workers
  if (is.null(w)) 2L else future_workers(eval(w, enclos = baseenv()))
}

#' @exportS3Method future::nbrOfWorkers
nbrOfWorkers.hako_cluster <- function(evaluator) {
  cmp <- eval(formals(evaluator)$.compute)
  i <- tryCatch(info(cmp), error = function(e) NULL)
  if (is.null(i)) 1L else max(1L, i[["connections"]])
}

#' @exportS3Method future::nbrOfFreeWorkers
nbrOfFreeWorkers.hako_multisession <- function(evaluator, background = FALSE, ...) {
  nbrOfWorkers.hako_multisession(evaluator)
}
