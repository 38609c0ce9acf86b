#' Daemon statistics
#'
#' `info()` returns the counters of a compute profile's host, like mirai's:
#' `connections` (daemons connected now), `cumulative` (ever), `awaiting`
#' (queued tasks), `executing` and `completed`. `status()` returns a list
#' with `connections`, `daemons` (the listening URL or "local") and `hako`
#' (awaiting, executing, completed), plus `table`, one row per daemon:
#' its id, name, address, tasks done on this connection, limits and version,
#' and its record over all its connections (by name and volunteer, so
#' reconnecting does not reset it): `failures` (tasks it failed: timeouts,
#' crashes, limits, refused results; not R errors) and `disagreements`
#' (replicated tasks where its result lost to the agreed one, see
#' [hako()]'s `.replicas`).
#'
#' @param .compute Compute profile (`NULL`: default), or a cluster made by
#'   [make_cluster()] (its nodes' counters summed, one table row per node).
#' @return `info()`: a named integer vector, or `NULL` when no daemons are
#'   set. `status()`: a list.
#' @examples
#' \dontrun{
#' daemons(2)
#' info()
#' status()$table
#' daemons(0)
#' }
#' @export
info <- function(.compute = NULL) {
  if (inherits(.compute, "hako_cluster_obj")) return(cluster_info(.compute)$counters)
  p <- .hako$profiles[[compute_name(.compute)]]
  if (is.null(p) || !p$alive) return(NULL)
  r <- query_info(p)
  r$counters
}

#' @rdname info
#' @export
status <- function(.compute = NULL) {
  if (inherits(.compute, "hako_cluster_obj")) {
    r <- cluster_info(.compute)
    if (is.null(r)) return(list(connections = 0L, daemons = NULL, hako = c(awaiting = 0L, executing = 0L, completed = 0L)))
    return(list(connections = unname(r$counters[["connections"]]), daemons = "local",
                hako = r$counters[c("awaiting", "executing", "completed")], table = r$table))
  }
  p <- .hako$profiles[[compute_name(.compute)]]
  if (is.null(p) || !p$alive) {
    return(list(connections = 0L, daemons = NULL, hako = c(awaiting = 0L, executing = 0L, completed = 0L)))
  }
  r <- query_info(p)
  cn <- r$counters
  list(connections = unname(cn[["connections"]]),
       daemons = if (is.null(p$url)) "local" else p$url,
       hako = cn[c("awaiting", "executing", "completed")],
       table = r$table)
}

query_info <- function(p, wait = 30) {
  p$info <- NULL
  send_frame(p, T_INFO)
  deadline <- Sys.time() + wait
  while (is.null(p$info)) {
    poll(p, 0.2)
    if (!p$alive) stop_dead(p)
    if (Sys.time() > deadline) stop("hako: the host did not answer INFO", call. = FALSE)
  }
  parts <- strsplit(p$info, "\n\n", fixed = TRUE)[[1L]]
  kv <- parse_kv(strsplit(parts[[1L]], "\n", fixed = TRUE)[[1L]])
  counters <- vapply(kv, function(v) as.integer(v), 0L)
  tab <- if (length(parts) > 1L && nzchar(parts[[2L]])) {
    utils::read.delim(text = parts[[2L]], sep = "\t", na.strings = "NA", stringsAsFactors = FALSE)
  } else NULL
  list(counters = counters, table = tab)
}


# A cluster's nodes each have a private host: their counters summed, their
# daemons' rows together. NULL once every node is stopped.
cluster_info <- function(cl) {
  rs <- lapply(cl, function(nd) {
    p <- .hako$profiles[[nd$env$compute]]
    if (is.null(p) || !p$alive) NULL else query_info(p)
  })
  rs <- Filter(Negate(is.null), rs)
  if (!length(rs)) return(NULL)
  counters <- Reduce(`+`, lapply(rs, function(r) r$counters))
  tabs <- Filter(Negate(is.null), lapply(rs, function(r) r$table))
  list(counters = counters, table = if (length(tabs)) do.call(rbind, tabs))
}
