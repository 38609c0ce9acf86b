# Task serialization: what a task's payload holds (host/PROTOCOL.md, "TASK"),
# the checks made before it is sent, and its timeout.

# External pointers would arrive in the sandbox as NULL pointers: refuse
# them where they are data (in the arguments, in lists, as attributes). Those
# deep inside a closure's environment are not looked for (as with PSOCK).
has_extptr <- function(x, depth = 0L) {
  if (typeof(x) == "externalptr") return(TRUE)
  if (depth > 4L || is.null(x)) return(FALSE)
  a <- attributes(x)
  if (length(a) && any(vapply(a, has_extptr, NA, depth = depth + 1L))) return(TRUE)
  if (is.list(x) && length(x) && length(x) <= 10000L && !is.data.frame(x)) {
    return(any(vapply(x, has_extptr, NA, depth = depth + 1L)))
  }
  FALSE
}

check_extptr <- function(x) {
  if (length(x) && has_extptr(x)) {
    stop("hako: cannot send an external pointer (a connection, a compiled-code handle, an Rcpp/data.table/",
         "DBI object ...) to a sandbox: it would arrive as a NULL pointer. Send plain R data instead.", call. = FALSE)
  }
}

ser <- function(x) {
  check_extptr(x)
  tryCatch(serialize(x, NULL, version = 3L), error = unserializable)
}

unserializable <- function(e) stop("hako: the task could not be serialized: ", conditionMessage(e), call. = FALSE)

# Packages whose namespaces the functions among x (a list, looked into a
# few levels deep) are defined in. unserialize() would silently replace a
# namespace the sandbox lacks by the global environment, so the sandbox
# checks these first and fails with an error naming them.
needed_packages <- function(x, depth = 0L) {
  if (is.function(x)) {
    # a package's own function (its environment is the namespace); closures
    # made inside functions keep their own environments and are let through
    e <- environment(x)
    if (!is.null(e) && isNamespace(e)) return(unname(getNamespaceName(e)))
    return(character())
  }
  if (is.list(x) && depth < 3L && length(x) <= 1000L && !is.data.frame(x)) {
    return(unique(unlist(lapply(x, needed_packages, depth = depth + 1L), use.names = FALSE)))
  }
  character()
}

# Frame a task as the sandbox's task runner reads it: the packages the
# task's functions come from, checked there before the task itself (a nested
# serialize()) is unserialized, since unserialize() would silently put the
# global environment in place of a namespace the sandbox lacks.
# `g` may be a list or, for a map, the list serialize()d once for all tasks
# (its packages then come in `pk`, already without the sandbox's own).
task_payload <- function(expr, a = NULL, g = NULL, seed = NULL, pk = NULL, scan = TRUE) {
  # hako(expr) alone: no data to look into, and serializing a language
  # object cannot fail (each check and tryCatch() costs microseconds a task)
  if (!length(a) && !length(g)) return(task_bytes(expr, a, g, seed, pk))
  more <- c(if (scan && length(a)) needed_packages(a), if (is.list(g)) needed_packages(g))
  if (length(more)) pk <- setdiff(unique(c(pk, more)), sandbox_packages())
  check_extptr(a)
  if (!is.raw(g)) check_extptr(g)
  tryCatch(task_bytes(expr, a, g, seed, pk), error = unserializable)
}

# The payload itself, unchecked (see PROTOCOL.md).
task_bytes <- function(expr, a, g, seed, pk) {
  inner <- serialize(list(expr = expr, args = a, globals = g, seed = seed), NULL, version = 3L)
  serialize(list(packages = as.character(pk), task = inner), NULL, version = 3L)
}

check_size <- function(p, payload) {
  lim <- p$max_payload
  if (is.finite(lim) && length(payload) > lim) {
    stop(sprintf("hako: the task is %.2f MiB serialized, larger than the host's bound of %.2f MiB (max_payload); send less data or start daemons(max_payload = )",
                 length(payload) / 1048576, lim / 1048576), call. = FALSE)
  }
}

# Most replicas a task may ask for (the host's cap; READY's max_replicas).
MAX_REPLICAS <- 5L

# `.replicas` or daemons(replicas = ) checked: NULL, or a whole number in
# 1..MAX_REPLICAS, as an integer.
check_replicas <- function(k, what = ".replicas") {
  if (is.null(k)) return(NULL)
  if (!is.numeric(k) || length(k) != 1L || is.na(k) || k != round(k) || k < 1 || k > MAX_REPLICAS) {
    stop(sprintf("hako: '%s' must be a whole number from 1 to %d: how many distinct daemons run each task and must return the same result",
                 what, MAX_REPLICAS), call. = FALSE)
  }
  as.integer(k)
}

# The replicas a task of profile `p` is sent with: `.replicas`, else the
# profile's daemons(replicas = ); 0 (a plain TASK) leaves it to the host.
task_replicas <- function(p, k) {
  if (is.null(k)) k <- p$replicas
  if (is.null(k)) return(0L)
  k <- check_replicas(k)
  if (is.null(p$ready[["max_replicas"]])) {
    stop("hako: this hako binary does not run replicated tasks (.replicas): update it", call. = FALSE)
  }
  if (identical(p$mode, "local") && k > p$n) {
    stop(sprintf("hako: .replicas = %d runs each task on %d distinct daemons, but compute profile '%s' has %d: set daemons(%d) or more",
                 k, k, p$name, p$n, k), call. = FALSE)
  }
  k
}

timeout_ms <- function(p, .timeout) {
  t <- if (is.null(.timeout)) p$timeout else .timeout
  if (is.null(t) || is.na(t) || t <= 0) return(0L)
  as.integer(min(max(1, round(t)), .Machine$integer.max))
}
