# hako's guest-side helpers, evaluated once when R boots and kept in the
# pristine snapshot. The value of this file is the environment holding them;
# the host keeps it alive (R_PreserveObject), so nothing is added to the
# user's global environment.

# Load the LAPACK modules now so that every task starts with them linked,
# and force the lazily loaded functions common tasks use, so that a task
# does not fetch and decompress them again from the package databases.
invisible(solve(matrix(2)))
invisible(La_library())
local({
  fit <- lm(mpg ~ wt, data = mtcars)
  invisible(summary(fit))
  invisible(predict(fit, mtcars[1:2, ]))
  invisible(glm(am ~ wt, data = mtcars, family = binomial))
  invisible(format(Sys.time(), "%Y-%m-%d %H:%M:%S", tz = "UTC"))
  invisible(quantile(1:10))
  invisible(sample(10))
  invisible(serialize(fit, NULL))
})
# The pristine image keeps no RNG state: every sandbox seeds from the host's
# entropy when it starts (seed_from() below), not from a shared seed.
if (exists(".Random.seed", envir = globalenv(), inherits = FALSE)) rm(".Random.seed", envir = globalenv())

# /library comes first in the library path even though it does not exist at
# boot: R-only packages from the host are mounted there (one directory per
# package, read-only) for the sandboxes that were given them.
# The sandbox's verified package set (compiled packages, mounted read-only
# at /hako/library) comes before both.
assign(".lib.loc", c("/hako/library", "/library", .libPaths()), envir = environment(.libPaths))

# R runs on one thread in the sandbox, and parallel::detectCores() would say
# NA (it finds no /proc): it says 1, set here so the pristine snapshot has it.
local({
  ns <- asNamespace("parallel")
  f <- function(all.tests = FALSE, logical = TRUE) 1L
  environment(f) <- ns
  unlockBinding("detectCores", ns)
  assign("detectCores", f, envir = ns)
  lockBinding("detectCores", ns)
})

# The helpers live in an environment whose parent is the base namespace, not
# the global environment, so nothing a task defines there can shadow them.
local(envir = new.env(parent = .BaseNamespaceEnv), {
  hako <- new.env(parent = baseenv())
  msg_con <- file("/dev/hako-message", open = "w", raw = TRUE)
  warn_con <- file("/dev/hako-warning", open = "w", raw = TRUE)

  # No processes exist in the sandbox: say so as an R error, not a warning.
  deny <- function(what) {
    force(what)
    function(...) stop(what, " is not available in the hako sandbox (no processes)", call. = FALSE)
  }
  for (f in c("system", "system2")) {
    for (env in list(baseenv(), .BaseNamespaceEnv)) {
      unlockBinding(f, env)
      assign(f, deny(paste0(f, "()")), envir = env)
      lockBinding(f, env)
    }
  }

  format_call <- function(call) paste(deparse(call, nlines = 1L, width.cutoff = 500L), collapse = "")

  # The helpers evaluate user code as eval(.hako_expr, ...): a condition whose
  # call is that frame was signalled at the user's top level.
  user_call <- function(call) {
    if (is.call(call) && length(call) >= 2L && identical(call[[2L]], quote(.hako_expr))) NULL else call
  }

  format_warning <- function(w) {
    call <- user_call(conditionCall(w))
    if (is.null(call)) sprintf("Warning: %s\n", conditionMessage(w))
    else sprintf("Warning in %s : %s\n", format_call(call), conditionMessage(w))
  }

  format_error <- function(e) {
    call <- user_call(conditionCall(e))
    if (is.null(call)) sprintf("Error: %s\n", conditionMessage(e))
    else sprintf("Error in %s : %s\n", format_call(call), conditionMessage(e))
  }

  # The calls between the user's code and the handler, most recent first,
  # like traceback(): without the helpers' frames and R's handler plumbing.
  user_calls <- function(calls) {
    fun_is <- function(cl, name) is.call(cl) && identical(cl[[1L]], as.name(name))
    is_user <- vapply(calls, fun_is, NA, name = ".hako_user")
    start <- if (any(is_user)) max(which(is_user)) + 1L else 1L
    plumbing <- which(vapply(calls, fun_is, NA, name = ".handleSimpleError"))
    end <- if (length(plumbing)) min(plumbing[plumbing >= start], length(calls)) - 1L else length(calls) - 1L
    if (end < start) return(list())
    keep <- calls[start:end]
    keep <- keep[!vapply(keep, function(cl) is.null(user_call(cl)), NA)]
    rev(lapply(keep, plain_call))
  }

  # A call as mirai gives it, but plain language: parsed back from its text,
  # so a function or data inlined by do.call() travels as code, never as a
  # closure with its environment (and its byte code, which the host refuses).
  plain_call <- function(call) {
    text <- paste(deparse(call, width.cutoff = 500L, nlines = 50L), collapse = "\n")
    tryCatch(str2lang(text), error = function(e) as.call(list(as.name(format_call(call)))))
  }

  # Run .hako_user() with messages and warnings sent to their own streams;
  # errors and interrupts come back as values with the calls that led there.
  to_message <- function(m) {
    cat(conditionMessage(m), file = msg_con, sep = "")
    flush(msg_con)
    invokeRestart("muffleMessage")
  }
  # getOption("warn") as R reads it: with 2 or more the handler declines,
  # so R itself turns the warning into an error where it was signalled (the
  # task's own tryCatch() sees it); below 0 the warning is dropped.
  to_warning <- function(w) {
    level <- getOption("warn")
    if (is.numeric(level) && length(level) == 1L && !is.na(level)) {
      if (level >= 2) return(invisible())
      if (level < 0) invokeRestart("muffleWarning")
    }
    cat(format_warning(w), file = warn_con, sep = "")
    flush(warn_con)
    invokeRestart("muffleWarning")
  }
  hako$run <- function(.hako_user) {
    calls <- NULL
    tryCatch(
      withCallingHandlers(
        list(ok = TRUE, value = .hako_user()),
        message = to_message,
        warning = to_warning,
        error = function(e) calls <<- sys.calls()
      ),
      error = function(e) list(ok = FALSE, cond = e, calls = user_calls(calls)),
      interrupt = function(i) list(ok = FALSE, cond = i, calls = list(), interrupted = TRUE)
    )
  }

  # `seed`: 4 random bytes from the host. A session without RNG state (a
  # fresh or reset sandbox) is seeded from them, so no two sandboxes share
  # a stream; state the session already has (set.seed(), keep_state) stays.
  seed_from <- function(seed) {
    if (is.raw(seed) && !exists(".Random.seed", envir = globalenv(), inherits = FALSE)) {
      set.seed(readBin(seed, "integer", size = 4L))
    }
  }

  # Status of hako$eval_text: 0 success, 1 R error, 2 interrupted.
  hako$eval_text <- function(code, seed = NULL) {
    seed_from(seed)
    exprs <- tryCatch(parse(text = code, keep.source = FALSE), error = function(e) e)
    if (inherits(exprs, "error")) {
      cat("Error: ", conditionMessage(exprs), "\n", sep = "", file = stderr())
      return(1L)
    }
    for (i in seq_along(exprs)) {
      .hako_expr <- exprs[[i]]
      r <- hako$run(function() {
        v <- withVisible(eval(.hako_expr, globalenv()))
        if (v$visible) print(v$value)
        invisible()
      })
      if (!r$ok) {
        if (isTRUE(r$interrupted)) return(2L)
        cat(format_error(r$cond), file = stderr(), sep = "")
        return(1L)
      }
    }
    0L
  }

  # An error as a value: the message string with class hakoError/errorValue,
  # carrying the call, the condition's classes and fields, and the calls.
  hako$error_value <- function(cond, calls) {
    msg <- conditionMessage(cond)
    call <- user_call(conditionCall(cond))
    text <- if (is.null(call)) paste("Error:", msg) else paste0("Error in ", format_call(call), ": ", msg)
    fields <- unclass(cond)
    fields$message <- NULL
    fields$call <- NULL
    out <- text
    for (n in names(fields)) if (nzchar(n)) attr(out, n) <- fields[[n]]
    attr(out, "message") <- msg
    attr(out, "call") <- call
    attr(out, "condition.class") <- class(cond)
    attr(out, "stack.trace") <- calls
    class(out) <- c("hakoError", "errorValue", "try-error")
    out
  }

  # The host refuses byte code and unforced promises (verify.rs): base R's
  # functions are compiled, and a closure made by a function factory holds
  # the factory's arguments as promises until they are used, so a value that
  # holds either is sent again without them (promises forced here, in the
  # sandbox). The test is a grepRaw() of the BCODESXP flags and of an
  # unforced promise's; a false match only costs the walk.
  bc_flags <- as.raw(c(0L, 0L, 0L, 21L))
  promise_flags <- as.raw(c(0L, 0L, 4L, 5L))
  to_bytes <- function(x) {
    b <- serialize(x, NULL, version = 3L)
    if (!length(grepRaw(bc_flags, b, fixed = TRUE)) && !length(grepRaw(promise_flags, b, fixed = TRUE))) return(b)
    y <- sendable(x)
    # nothing rewritten: the match was data (an integer 21), not byte code
    if (y$changed) serialize(y$value, NULL, version = 3L) else b
  }

  # list(value, changed): a copy of x whose closures have no byte code (and
  # whose environments hold no unforced promise): lists, attributes and the
  # unlocked environments reached (bindings replaced by their values, so
  # forced promises made by compiled code go too) are walked once each.
  # What cannot be rewritten is left, and the host refuses it.
  sendable <- function(x) {
    seen <- new.env(hash = TRUE, parent = emptyenv())
    changed <- FALSE
    special <- function(e) {
      identical(e, globalenv()) || identical(e, baseenv()) || identical(e, emptyenv()) ||
        isNamespace(e) || !is.null(attr(e, "name", exact = TRUE)) || environmentName(e) != ""
    }
    walk <- function(x) {
      if (is.environment(x)) {
        key <- format(x)
        # locked ones (namespaces, the runner's own) are left as they are
        if (special(x) || environmentIsLocked(x) || exists(key, envir = seen, inherits = FALSE)) return(x)
        assign(key, TRUE, envir = seen)
        for (n in ls(x, all.names = TRUE, sorted = FALSE)) {
          if (bindingIsActive(n, x) || bindingIsLocked(n, x)) next
          tryCatch(assign(n, walk(get(n, envir = x, inherits = FALSE)), envir = x), error = function(e) NULL)
          changed <<- TRUE
        }
        walk(parent.env(x))
        return(x)
      }
      a <- attributes(x)
      if (typeof(x) == "closure") {
        if (typeof(.Internal(bodyCode(x))) == "bytecode") {
          x <- as.function(c(formals(x), list(body(x))), envir = environment(x))
          changed <<- TRUE
        }
        walk(environment(x))
      } else if (is.list(x) || is.expression(x) || is.call(x)) {
        # calls too: a condition's call can hold a function itself
        # (do.call()); symbols, the empty argument among them, are left
        if (!is.call(x)) x <- unclass(x)
        for (i in seq_along(x)) if (!is.symbol(x[[i]]) && !is.null(x[[i]])) x[[i]] <- walk(x[[i]])
      }
      if (length(a)) attributes(x) <- lapply(a, walk)
      x
    }
    value <- walk(x)
    list(value = value, changed = changed)
  }

  # A task: serialize()d list(expr, args), or the R package's form
  # list(packages = , task = serialize(list(expr, args, globals, seed))),
  # globals a named list or one serialize()d: the packages the task's
  # functions come from are checked before the task is unserialized, since
  # unserialize() would silently put the global environment in place of a
  # namespace the sandbox lacks. Returns list(status, bytes) with status 0
  # value, 1 error value.
  #
  # Tasks run without tryCatch(): in this build (no byte code) a tryCatch()
  # costs more than a whole small task. One withCallingHandlers() routes
  # messages and warnings, and an error or interrupt nobody catches records
  # itself in `hako` and aborts to the host's top level, which then asks
  # hako$task_error() for the value of what failed (`phase`).
  bad_task <- function(msg) list(1L, to_bytes(hako$error_value(simpleError(msg), list())))
  on_error <- function(e) {
    hako$cond <- e
    hako$calls <- sys.calls()
    invokeRestart("abort")
  }
  on_interrupt <- function(i) {
    hako$cond <- i
    hako$interrupted <- TRUE
    invokeRestart("abort")
  }
  hako$task <- function(bytes, seed = NULL) {
    seed_from(seed)
    withCallingHandlers(run_task(bytes),
      message = to_message, warning = to_warning,
      error = on_error, interrupt = on_interrupt
    )
  }
  run_task <- function(bytes) {
    hako$interrupted <- FALSE
    hako$cond <- NULL
    # cleared so that task_error() can tell R's message about this task
    .Internal(seterrmessage(""))
    hako$phase <- "decode"
    payload <- unserialize(bytes)
    if (is.list(payload) && identical(names(payload), c("packages", "task"))) {
      pk <- payload$packages
      if (length(pk)) {
        missing <- pk[!vapply(pk, requireNamespace, NA, quietly = TRUE)]
        if (length(missing)) {
          return(bad_task(paste0(
            "hako: package(s) not available in the sandbox: ", paste(missing, collapse = ", "),
            " (the hako sandbox has only these packages: ", paste(sort(.packages(TRUE)), collapse = ", "), ")"
          )))
        }
      }
      payload <- unserialize(payload$task)
    }
    if (!is.list(payload) || length(payload) < 1L) {
      return(bad_task("hako: the task is not a serialize()d list(expr, args)"))
    }
    expr <- payload[[1L]]
    args <- if (length(payload) >= 2L) payload[[2L]] else NULL
    env <- new.env(parent = globalenv())
    if (is.list(args) && length(args)) {
      nm <- names(args)
      if (is.null(nm) || any(!nzchar(nm))) {
        return(bad_task("hako: task arguments must be a named list"))
      }
      list2env(args, envir = env)
    }
    globals <- payload$globals
    if (is.raw(globals)) {
      # a map's globals, serialized once for all its tasks
      hako$phase <- "globals"
      globals <- unserialize(globals)
      if (!is.list(globals)) return(bad_task("hako: the task's globals are not a serialize()d list"))
    }
    if (length(globals)) list2env(globals, envir = globalenv())
    if (!is.null(payload$seed)) assign(".Random.seed", payload$seed, envir = globalenv())
    .hako_user <- function() {
      if (is.expression(expr)) {
        v <- NULL
        for (.hako_expr in expr) v <- eval(.hako_expr, env)
        v
      } else {
        .hako_expr <- expr
        eval(.hako_expr, env)
      }
    }
    hako$phase <- "user"
    value <- .hako_user()
    hako$phase <- "encode"
    list(0L, to_bytes(value))
  }

  # After hako$task(bytes) aborted: the value for what failed. Status 2 when
  # it was interrupted.
  hako$task_error <- function(bytes) {
    cond <- hako$cond
    if (isTRUE(hako$interrupted)) return(list(2L, raw()))
    if (is.null(cond)) {
      # R's default handler reported the error itself (the calling handler
      # could not run, e.g. out of C stack): its message is R's.
      msg <- trimws(geterrmessage())
      if (nzchar(msg)) {
        msg <- sub("(?s)^Error(?: in .*? :|:)\\s*", "", msg, perl = TRUE)
        if (identical(hako$phase, "user")) {
          return(list(1L, to_bytes(hako$error_value(simpleError(msg), list()))))
        }
        return(bad_task(paste("hako: the task failed:", msg)))
      }
      # left without a condition or message: the task's own invokeRestart("abort")
      return(bad_task("hako: the task aborted (it invoked the \"abort\" restart)"))
    }
    switch(hako$phase,
      user = list(1L, to_bytes(hako$error_value(cond, user_calls(hako$calls)))),
      decode = bad_task("hako: the task is not a serialize()d list(expr, args)"),
      globals = bad_task("hako: the task's globals are not a serialize()d list"),
      encode = bad_task(paste("hako: the result could not be serialized:", conditionMessage(cond))),
      bad_task(paste("hako: the task failed:", conditionMessage(cond)))
    )
  }

  # The base functions the helpers name are bound here as the values they
  # have now, so a task that rebinds one in base cannot change what the
  # runner calls around its code: every primitive, and the closures used
  # after user code as copies without byte code (this environment travels
  # with the handlers in a condition's calls, and the host refuses byte code).
  here <- environment()
  fns <- Filter(is.function, c(mget(ls(here, all.names = TRUE), envir = here), as.list(hako, all.names = TRUE)))
  used <- unique(unlist(lapply(fns, function(f) all.names(body(f)))))
  used <- setdiff(intersect(used, ls(.BaseNamespaceEnv, all.names = TRUE)), ls(here, all.names = TRUE))
  for (n in used) {
    f <- get(n, envir = .BaseNamespaceEnv)
    if (is.primitive(f)) assign(n, f, envir = here)
  }
  for (n in c("serialize", "grepRaw", "identical", "paste", "paste0", "conditionMessage", "conditionCall",
              "deparse", "vapply", "lapply", "sys.calls", "invokeRestart", "simpleError", "isTRUE",
              "getOption", "str2lang", "tryCatch")) {
    f <- get(n, envir = .BaseNamespaceEnv)
    assign(n, as.function(c(formals(f), list(body(f))), envir = .BaseNamespaceEnv), envir = here)
  }
  rm(f, n, fns, used)
  lockEnvironment(here, bindings = TRUE)

  hako
})
