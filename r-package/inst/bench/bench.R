# hako benchmark: round trip of hako(1)[] (p50/p99 over 1,000 sequential
# tasks) and hako_map(1:10000, identity)[] throughput with 2 daemons, side by
# side with parallel's PSOCK cluster and future::multisession in the same run.
# Run: HAKO_BINARY=target/release/hako Rscript r-package/inst/bench/bench.R [n_rt] [n_map]
suppressMessages(library(hako))
args <- commandArgs(trailingOnly = TRUE)
n_rt <- if (length(args) >= 1) as.integer(args[[1]]) else 1000L
n_map <- if (length(args) >= 2) as.integer(args[[2]]) else 10000L
now <- function() proc.time()[["elapsed"]]
rt_stats <- function(f, n) {
  for (i in 1:20) f()  # warm up
  x <- numeric(n)
  for (i in seq_len(n)) { t0 <- now(); f(); x[i] <- now() - t0 }
  # proc.time has ms resolution: use a high-resolution clock when there is one
  x * 1000
}
hr <- function(f, n) {
  for (i in 1:20) f()
  x <- numeric(n)
  for (i in seq_len(n)) { t0 <- Sys.time(); f(); x[i] <- as.numeric(Sys.time() - t0, units = "secs") }
  x * 1000
}
rows <- list()
add <- function(name, rt, tput) {
  rows[[length(rows) + 1L]] <<- data.frame(contestant = name, rt_p50_ms = round(stats::quantile(rt, 0.5), 3),
                                           rt_p99_ms = round(stats::quantile(rt, 0.99), 3),
                                           map_tasks_per_s = round(tput), row.names = NULL)
}

# hako
daemons(2)
rt <- hr(function() hako(1)[], n_rt)
t0 <- Sys.time(); r <- hako_map(seq_len(n_map), identity)[]; el <- as.numeric(Sys.time() - t0, units = "secs")
stopifnot(length(r) == n_map, identical(r[[n_map]], n_map))
add("hako (2 sandboxed daemons)", rt, n_map / el)
daemons(0)

# parallel PSOCK
cl <- parallel::makePSOCKcluster(2)
rt <- hr(function() parallel::clusterEvalQ(cl[1], 1), n_rt)
t0 <- Sys.time(); r <- parallel::parLapply(cl, seq_len(n_map), identity, chunk.size = 1); el <- as.numeric(Sys.time() - t0, units = "secs")
add("parallel PSOCK (2 workers, one task per element)", rt, n_map / el)
t0 <- Sys.time(); r <- parallel::parLapply(cl, seq_len(n_map), identity); el <- as.numeric(Sys.time() - t0, units = "secs")
add("parallel PSOCK (2 workers, chunked parLapply)", rt, n_map / el)
parallel::stopCluster(cl)

# future multisession
if (requireNamespace("future", quietly = TRUE)) {
  future::plan(future::multisession, workers = 2)
  n_f <- min(n_rt, 200L)
  rt <- hr(function() future::value(future::future(1)), n_f)
  n_fm <- min(n_map, 500L)
  t0 <- Sys.time(); fs <- lapply(seq_len(n_fm), function(i) future::future(i)); r <- future::value(fs)
  el <- as.numeric(Sys.time() - t0, units = "secs")
  add(sprintf("future multisession (2 workers; %d round trips, %d futures)", n_f, n_fm), rt, n_fm / el)
  future::plan(hako::hako_multisession, workers = 2)
  rt <- hr(function() future::value(future::future(1)), n_f)
  t0 <- Sys.time(); fs <- lapply(seq_len(n_fm), function(i) future::future(i)); r <- future::value(fs)
  el <- as.numeric(Sys.time() - t0, units = "secs")
  add(sprintf("future hako_multisession (2 daemons; %d round trips, %d futures)", n_f, n_fm), rt, n_fm / el)
  future::plan(future::sequential)
  daemons(0, .compute = "hako_multisession")
}

tab <- do.call(rbind, rows)
cat(sprintf("R %s, %d cores; round trips: %d sequential tasks; map: %d elements\n",
            getRversion(), parallel::detectCores(), n_rt, n_map))
print(tab, right = FALSE)
