# Anchor for the host/daemon benchmark: base R's parallel PSOCK cluster,
# trivial-task round trip (p50, p99) and throughput with 1 and 2 workers.
library(parallel)
rounds <- 1000L; tasks <- 10000L
for (n in 1:2) {
  cl <- makePSOCKcluster(n)
  invisible(clusterEvalQ(cl, 1))
  rt <- numeric(rounds)
  for (i in seq_len(rounds)) {
    t <- Sys.time()
    parallel:::sendCall(cl[[1]], function(x) x + 1, list(1))
    parallel:::recvResult(cl[[1]])
    rt[i] <- as.numeric(Sys.time() - t, units = "secs")
  }
  t <- system.time(parLapply(cl, seq_len(tasks), function(x) x))[[3]]
  cat(sprintf("PSOCK %d worker(s): round trip p50 %.0f us p99 %.0f us; %d tasks in %.2f s = %.0f tasks/s (parLapply, chunked)\n",
              n, quantile(rt, 0.5) * 1e6, quantile(rt, 0.99) * 1e6, tasks, t, tasks / t))
  t <- system.time(clusterApplyLB(cl, seq_len(2000L), function(x) x))[[3]]
  cat(sprintf("PSOCK %d worker(s): clusterApplyLB one task per message: %.0f tasks/s\n", n, 2000 / t))
  stopCluster(cl)
}
