#' A parallel cluster of sandboxed daemons
#'
#' Makes a cluster object that the \pkg{parallel} functions accept
#' (`parLapply()`, `parSapply()`, `clusterApply()`, `clusterApplyLB()`,
#' `clusterExport()`, `clusterEvalQ()`, `clusterCall()`, `stopCluster()`).
#' Each node is one sandboxed daemon that keeps its state between calls (as
#' a PSOCK worker does), behind its own private host, so that what
#' `clusterExport()` or `clusterEvalQ()` set on a node stays there.
#'
#' [status()] and [info()] accept the cluster (`status(cl)`). Unlike mirai's,
#' nodes are local only: a node keeps its state, so it is one daemon behind
#' a host of its own, and `url` and `remote` are an R error (for remote
#' daemons use [daemons()]`(url = )` with [hako_map()] or
#' `future::plan(hako_cluster)`).
#'
#' @param n Number of nodes.
#' @param url,remote Not supported (an R error): see above.
#' @param ... Further [daemons()] arguments for each node (e.g. `seed`,
#'   `timeout`, `mount`, `output`).
#' @param memory Memory cap of each node's sandbox, in MiB.
#' @param packages R-only packages to make available on the nodes (see
#'   [daemons()]); e.g. `"doParallel"` so that `foreach`'s `%dopar%` runs on
#'   the cluster through `doParallel::registerDoParallel(cl)`.
#' @return A cluster object of class `c("hako_cluster_obj", "cluster")`.
#' @examples
#' \dontrun{
#' cl <- make_cluster(2)
#' parallel::clusterExport(cl, character())
#' parallel::parLapply(cl, 1:4, sqrt)
#' parallel::stopCluster(cl)
#' }
#' @export
make_cluster <- function(n = 2L, url = NULL, remote = NULL, ..., memory = NULL, packages = NULL) {
  if (!is.null(url) || !is.null(remote)) {
    refuse_arg("make_cluster", if (is.null(url)) "remote = " else "url = ",
               "a node keeps its state, so it is one local daemon behind a host of its own; for remote daemons use daemons(url = host_url()) with hako_map() or future::plan(hako_cluster)")
  }
  kept <- intersect(names(list(...)), c("cleanup", "keep_state"))
  if (length(kept)) {
    refuse_arg("make_cluster", paste0(kept[[1L]], " = "), "a node always keeps its state between calls, as a PSOCK worker (and mirai's cluster) does")
  }
  if (!is.numeric(n) || length(n) != 1L) stop("hako: 'n' must be a positive integer", call. = FALSE)
  n <- as.integer(n)
  if (is.na(n) || n < 1L) stop("hako: 'n' must be a positive integer", call. = FALSE)
  .hako$ncluster <- if (is.null(.hako$ncluster)) 1L else .hako$ncluster + 1L
  base <- sprintf(".cluster%d", .hako$ncluster)
  nodes <- vector("list", n)
  for (i in seq_len(n)) {
    name <- sprintf("%s.%d", base, i)
    tryCatch(daemons(1L, ..., keep_state = TRUE, memory = memory, packages = packages, .compute = name), error = function(e) {
      for (j in seq_len(i - 1L)) reset_profile(sprintf("%s.%d", base, j))
      stop(e)
    })
    e <- new.env(parent = emptyenv())
    e$compute <- name
    e$queue <- list()
    nodes[[i]] <- structure(list(env = e, rank = i), class = "hako_node")
  }
  structure(nodes, class = c("hako_cluster_obj", "cluster"))
}

#' @export
print.hako_cluster_obj <- function(x, ...) {
  cat(sprintf("hako cluster with %d sandboxed node(s)\n", length(x)))
  invisible(x)
}

#' @export
print.hako_node <- function(x, ...) {
  cat(sprintf("hako cluster node %d\n", x$rank))
  invisible(x)
}

# parallel's node protocol: sendData(node, list(type, data)), recvData(node),
# recvOneData(cl). EXEC data is list(fun, args, return, tag).
sendData.hako_node <- function(node, data) {
  e <- node$env
  if (identical(data$type, "EXEC")) {
    d <- data$data
    p <- get_profile(e$compute)
    x <- submit(p, quote(do.call(.hako_fun, .hako_fargs, quote = TRUE)),
                a = list(.hako_fun = d$fun, .hako_fargs = d$args), seed = FALSE)
    x$tag <- d$tag
    x$started <- Sys.time()
    e$queue[[length(e$queue) + 1L]] <- x
  } else if (identical(data$type, "DONE")) {
    reset_profile(e$compute)
  }
  invisible(NULL)
}

node_message <- function(x) {
  v <- x$value
  # parallel shows a failed node's try-error text in its own error message:
  # its terminal controls are rendered visibly first
  if (inherits(v, "try-error") && is.character(v)) {
    a <- attributes(v)
    v <- safe_text(as.vector(unclass(v)))
    attributes(v) <- a
  }
  list(type = "VALUE", value = v, success = !inherits(v, "try-error") && !is_error_value(v),
       time = Sys.time() - x$started, tag = x$tag)
}

recvData.hako_node <- function(node) {
  e <- node$env
  if (!length(e$queue)) stop("hako: no call is pending on this cluster node", call. = FALSE)
  x <- e$queue[[1L]]
  e$queue <- e$queue[-1L]
  wait_hako(x)
  node_message(x)
}

recvOneData.hako_cluster_obj <- function(cl) {
  repeat {
    for (i in seq_along(cl)) {
      e <- cl[[i]]$env
      if (length(e$queue)) {
        x <- e$queue[[1L]]
        if (!x$resolved && x$p$alive) poll(x$p, 0)
        if (x$resolved || !x$p$alive) {
          recvData.hako_node(cl[[i]])
          return(list(node = i, value = node_message(x)))
        }
      }
    }
    cons <- list()
    for (nd in cl) {
      p <- .hako$profiles[[nd$env$compute]]
      if (!is.null(p) && p$alive && length(nd$env$queue)) cons[[length(cons) + 1L]] <- p$con
    }
    if (!length(cons)) stop("hako: no call is pending on this cluster", call. = FALSE)
    socketSelect(cons, write = FALSE, timeout = 0.5)
  }
}

#' @importFrom parallel stopCluster
#' @export
stopCluster.hako_cluster_obj <- function(cl = NULL) {
  for (nd in cl) reset_profile(nd$env$compute)
  invisible(NULL)
}

register_parallel_methods <- function() {
  ns <- asNamespace("parallel")
  registerS3method("sendData", "hako_node", sendData.hako_node, envir = ns)
  registerS3method("recvData", "hako_node", recvData.hako_node, envir = ns)
  registerS3method("recvOneData", "hako_cluster_obj", recvOneData.hako_cluster_obj, envir = ns)
}
