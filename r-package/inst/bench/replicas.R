# The cost of results checked by redundancy: .replicas = 2 against 1 in the
# same run, on daemons(4): p50 latency of n_rt sequential hako(1)[] and
# throughput of hako_map(1:n_map, identity), then their ratios.
# Run: HAKO_BINARY=target/release/hako Rscript r-package/inst/bench/replicas.R [n_rt] [n_map]
suppressMessages(library(hako))
args <- commandArgs(trailingOnly = TRUE)
n_rt <- if (length(args) >= 1) as.integer(args[[1]]) else 200L
n_map <- if (length(args) >= 2) as.integer(args[[2]]) else 1000L
latency_ms <- function(k, n) {
  for (i in 1:20) hako(1, .replicas = k)[] # warm up
  x <- numeric(n)
  for (i in seq_len(n)) {
    t0 <- Sys.time()
    hako(1, .replicas = k)[]
    x[i] <- as.numeric(Sys.time() - t0, units = "secs")
  }
  x * 1000
}
map_rate <- function(k, n) {
  t0 <- Sys.time()
  r <- hako_map(seq_len(n), identity, .replicas = k)[]
  el <- as.numeric(Sys.time() - t0, units = "secs")
  stopifnot(length(r) == n, identical(r[[n]], n))
  n / el
}
daemons(4)
rows <- list()
for (k in c(1L, 2L)) {
  rt <- latency_ms(k, n_rt)
  rows[[k]] <- data.frame(replicas = k, rt_p50_ms = round(stats::median(rt), 2),
                          rt_p90_ms = round(stats::quantile(rt, 0.9, names = FALSE), 2),
                          map_tasks_per_s = round(map_rate(k, n_map)))
}
tab <- status()$table
stopifnot(sum(tab$disagreements) == 0, sum(tab$failures) == 0)
daemons(0)
out <- do.call(rbind, rows)
print(out, row.names = FALSE)
cat(sprintf("\nreplicas = 2 against 1 (4 local daemons, %d round trips, a map of %d): p50 latency x%.2f, map throughput x%.2f\n",
            n_rt, n_map, out$rt_p50_ms[[2]] / out$rt_p50_ms[[1]], out$map_tasks_per_s[[2]] / out$map_tasks_per_s[[1]]))
