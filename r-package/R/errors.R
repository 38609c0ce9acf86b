mk_error_value <- function(code, msg) {
  structure(as.integer(code), message = msg, class = "errorValue")
}

mk_interrupt <- function(msg) {
  structure(20L, message = msg, class = c("hakoInterrupt", "errorValue"))
}

mk_hako_error <- function(msg, cls = character()) {
  out <- paste("Error:", msg)
  attr(out, "message") <- msg
  attr(out, "call") <- NULL
  attr(out, "condition.class") <- c(cls, "hakoError", "error", "condition")
  attr(out, "stack.trace") <- list()
  class(out) <- c("hakoError", "errorValue", "try-error")
  out
}

#' Error values
#'
#' A task that fails resolves to an error value instead of signalling:
#' an R error in the task is a 'hakoError' (also 'errorValue' and
#' 'try-error'), the message string with the condition's details as
#' attributes reachable with `$`: `$message`, `$call`, `$condition.class`,
#' `$stack.trace` (the calls that led to the error, most recent first) and
#' the original condition's other fields. A failure of the task itself is an
#' 'errorValue' integer code: 5 (timed out), 19 (connection reset: the daemon
#' was lost and retries were spent, or the host went away) or 20 (cancelled
#' by [stop_hako()], then also a 'hakoInterrupt').
#' What the host or the sandbox refuses is a 'hakoError' with the reason as
#' `$message` and its kind first in `$condition.class`: "hakoRefused" (the
#' result is outside the safe subset: "result refused: ..."), "hakoRejected"
#' ("result too large", "too many unread results"), "hakoCrashed" ("the
#' task crashed its daemon"), "hakoDisagreed" (a task's `.replicas` gave
#' no result k times: "replicas disagree: ..."), "hakoMemoryLimit",
#' "hakoOutputLimit". Printed
#' messages show a task's terminal control characters visibly (`^[`); `$`
#' returns them as sent.
#'
#' @param x An object.
#' @return `TRUE` or `FALSE`.
#' @examples
#' is_error_value(1)
#' \dontrun{
#' daemons(1)
#' e <- hako(stop("boom"))[]
#' is_hako_error(e)
#' e$message
#' daemons(0)
#' }
#' @name is_error_value
NULL

#' @rdname is_error_value
#' @export
is_error_value <- function(x) inherits(x, "errorValue")

#' @rdname is_error_value
#' @export
is_hako_error <- function(x) inherits(x, "hakoError")

#' @rdname is_error_value
#' @export
is_hako_interrupt <- function(x) inherits(x, "hakoInterrupt")

#' @rdname is_error_value
#' @param name An attribute name.
#' @export
`$.hakoError` <- function(x, name) attr(x, name, exact = TRUE)

#' @export
`$.errorValue` <- function(x, name) attr(x, name, exact = TRUE)

#' @export
print.hakoError <- function(x, ...) {
  cat("'hakoError' chr ", safe_text(as.character(unclass(x)[[1L]])), "\n", sep = "")
  invisible(x)
}

error_text <- function(code) {
  switch(as.character(code), "5" = "Timed out", "19" = "Connection reset", "20" = "Operation canceled",
         "Error")
}

#' @export
print.errorValue <- function(x, ...) {
  cat("'errorValue' int ", as.integer(unclass(x)[[1L]]), " | ", error_text(unclass(x)[[1L]]), "\n", sep = "")
  m <- attr(x, "message", exact = TRUE)
  if (is.character(m) && length(m) == 1L && !is.na(m) && nzchar(m)) cat("  ", safe_text(m), "\n", sep = "")
  invisible(x)
}

#' @export
print.unresolvedValue <- function(x, ...) {
  cat("'unresolved' logi NA\n")
  invisible(x)
}

unresolved_value <- function() structure(NA, class = "unresolvedValue")

#' Query whether a value is unresolved
#'
#' @param x A 'hako' or 'hako_map' object, a list of them, or a value read
#'   from `$data`.
#' @return `TRUE` while the task (any of them) is still running; never blocks.
#' @examples
#' unresolved(1)
#' @export
unresolved <- function(x) {
  if (inherits(x, "hako")) {
    if (!x$resolved) poll(x$p, 0)
    return(!x$resolved)
  }
  if (inherits(x, "hako_map")) {
    if (x$b$ndone < x$b$n) poll(x$p, 0)
    return(x$b$ndone < x$b$n)
  }
  if (inherits(x, "unresolvedValue")) return(TRUE)
  if (is.list(x) && length(x) && all(vapply(x, function(e) inherits(e, c("hako", "hako_map")), NA))) {
    return(any(vapply(x, unresolved, NA)))
  }
  FALSE
}

# The packages a task's error says the sandbox lacks ("there is no package
# called 'X'" from library(), or the task runner's "not available in the
# sandbox: X, Y"), or character() for any other error.
missing_packages <- function(msg) {
  if (!is.character(msg) || length(msg) != 1L || is.na(msg)) return(character())
  m <- regmatches(msg, regexec("there is no package called [\u2018'`\"]?([A-Za-z0-9.]+)", msg))[[1L]]
  if (length(m)) return(m[[2L]])
  m <- regmatches(msg, regexec("not available in the sandbox: ([A-Za-z0-9., ]+)", msg))[[1L]]
  if (length(m)) return(trimws(strsplit(m[[2L]], ",", fixed = TRUE)[[1L]]))
  character()
}

# What to do about a package the sandbox lacks, for the compute profile
# `compute` the task ran on: name it in the daemons' packages (see
# resolve_packages()).
package_hint <- function(pk, compute) {
  q <- paste0("\"", pk, "\"", collapse = ", ")
  how <- if (identical(compute, "hako_multisession")) {
    sprintf("plan(hako::hako_multisession, packages = c(%s))", q)
  } else {
    sprintf("daemons(packages = c(%s)) when setting the daemons (or make_cluster(packages = ))", q)
  }
  paste0("hint: give the sandboxes the package with ", how,
         ": from hako's package store (add repos = \"URL\" to install a WebAssembly build into it, or run `hako pkg install ",
         paste(pk, collapse = " "), " --repo URL`), else an R-only package installed in this session's library")
}

# An error value whose message says the sandbox lacks a package gets the
# hint appended (in its string and its $message), staying the task's value.
with_package_hint <- function(v, compute) {
  if (!is_hako_error(v)) return(v)
  msg <- attr(v, "message", exact = TRUE)
  pk <- missing_packages(msg)
  if (!length(pk)) return(v)
  hint <- package_hint(pk, compute)
  a <- attributes(v)
  v <- paste0(sub("\n$", "", unclass(v)[[1L]]), "\n", hint, "\n")
  attributes(v) <- a
  attr(v, "message") <- paste0(msg, "\n", hint)
  v
}

# A condition relayed by a future: the same hint for its message.
condition_with_hint <- function(cond, compute) {
  if (!inherits(cond, "error")) return(cond)
  pk <- missing_packages(conditionMessage(cond))
  if (length(pk)) cond$message <- paste0(conditionMessage(cond), "\n", package_hint(pk, compute))
  cond
}
