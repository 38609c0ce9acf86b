# hako against mirai on mirai's own benchmark (issue 13), all in one run,
# 2 workers each: hako (2 sandboxed daemons in one host process, each task
# in a pristine sandbox), mirai without and with dispatcher (when installed)
# and parallel's PSOCK cluster.
#   - round trip: `x(1)[]` p50/p99 over n_rt sequential calls after warm-up
#   - map: `map(1:n_map, identity)` elements/s (PSOCK: clusterApplyLB)
#   - start: from starting the 2 workers to the first result
#   - idle RSS of the worker side (VmRSS and PSS from /proc, 2 s after the
#     last task): one `hako daemon` process (one sandbox, over wss) against
#     one mirai daemon process; hako's host process holding both in-process
#     daemons against both mirai daemons
#   - hako_map(.chunk = TRUE) (elements of one map share a sandbox) when the
#     installed hako has it
# Prints the table and the ratios the issue sets as goals.
# Run: HAKO_BINARY=target/release/hako Rscript r-package/inst/bench/mirai.R [n_rt] [n_map]
# (with mirai installed in a library of .libPaths(), e.g. R_LIBS=/tmp/rlib-mirai)
suppressMessages(library(hako))
args <- commandArgs(trailingOnly = TRUE)
n_rt <- if (length(args) >= 1) as.integer(args[[1]]) else 2000L
n_map <- if (length(args) >= 2) as.integer(args[[2]]) else 10000L
has_mirai <- requireNamespace("mirai", quietly = TRUE)

secs <- function(t0) as.numeric(Sys.time() - t0, units = "secs")
rt <- function(f, n) {
  for (i in 1:200) f() # warm up
  x <- numeric(n)
  for (i in seq_len(n)) { t0 <- Sys.time(); f(); x[i] <- secs(t0) }
  x * 1000
}
mem <- function(pids) {
  one <- function(pid) {
    st <- tryCatch(readLines(sprintf("/proc/%d/status", pid)), error = function(e) character())
    rss <- as.numeric(sub("[^0-9]*([0-9]+).*", "\\1", grep("^VmRSS:", st, value = TRUE)))
    sm <- tryCatch(readLines(sprintf("/proc/%d/smaps_rollup", pid)), error = function(e) character())
    pss <- as.numeric(sub("[^0-9]*([0-9]+).*", "\\1", grep("^Pss:", sm, value = TRUE)))
    c(rss = if (length(rss)) rss / 1024 else NA, pss = if (length(pss)) pss / 1024 else NA)
  }
  m <- vapply(pids, one, c(rss = 0, pss = 0))
  list(each = m, sum = rowSums(m))
}
rows <- list()
add <- function(name, r, tput = NA, start = NA, rss = NA, pss = NA) {
  rows[[name]] <<- data.frame(contestant = name,
                              p50_ms = round(stats::quantile(r, 0.5, na.rm = TRUE, names = FALSE), 3),
                              p99_ms = round(stats::quantile(r, 0.99, na.rm = TRUE, names = FALSE), 3),
                              map_per_s = round(tput), start_s = round(start, 3),
                              rss_mb = round(rss, 1), pss_mb = round(pss, 1), row.names = NULL)
}

load0 <- readLines("/proc/loadavg")

# hako
t0 <- Sys.time(); daemons(2); invisible(hako(1)[]); st <- secs(t0)
p <- hako:::get_profile(NULL)
r <- rt(function() hako(1)[], n_rt)
t0 <- Sys.time(); out <- hako_map(seq_len(n_map), identity)[]; tp <- n_map / secs(t0)
stopifnot(length(out) == n_map, identical(out[[n_map]], n_map))
Sys.sleep(2); invisible(gc()) # idle: daemons give their sandbox's pages back after 1 s
m <- mem(p$pid)
add("hako (2 daemons, pristine per task)", r, tp, st, m$sum[["rss"]], m$sum[["pss"]])
chunked <- "chunk" %in% sub("^\\.", "", names(formals(hako_map)))
if (chunked) {
  t0 <- Sys.time(); out2 <- hako_map(seq_len(n_map), identity, .chunk = TRUE)[]; tc <- n_map / secs(t0)
  stopifnot(identical(out2, out))
  big <- n_map * 10L
  t0 <- Sys.time(); out3 <- hako_map(seq_len(big), identity, .chunk = TRUE)[]; tc2 <- big / secs(t0)
  stopifnot(length(out3) == big)
  add("hako_map(.chunk = TRUE)", NA, tc)
  add(sprintf("hako_map(.chunk = TRUE), %d elements", big), NA, tc2)
}
daemons(0)
# one daemon process (one sandbox, over wss) against one mirai daemon process
invisible(daemons(url = host_url(host = "127.0.0.1"))); dpid <- launch_local(1); p <- hako:::get_profile(NULL)
t0 <- Sys.time(); while (hako:::query_info(p)$counters[["connections"]] < 1 && secs(t0) < 60) Sys.sleep(0.1)
for (i in 1:200) hako(1)[]
Sys.sleep(2)
hako_one <- mem(dpid)$each
daemons(0)

# mirai
if (has_mirai) {
  for (disp in c(FALSE, TRUE)) {
    t0 <- Sys.time(); mirai::daemons(2, dispatcher = disp); invisible(mirai::mirai(1)[]); st <- secs(t0)
    r <- rt(function() mirai::mirai(1)[], n_rt)
    t0 <- Sys.time(); out <- mirai::mirai_map(seq_len(n_map), identity)[]; tp <- n_map / secs(t0)
    stopifnot(length(out) == n_map)
    pids <- unique(unlist(mirai::everywhere(Sys.getpid())[]))
    if (length(pids) < 2L) pids <- unique(unlist(lapply(1:20, function(i) mirai::mirai({ Sys.sleep(0.05); Sys.getpid() })[])))
    Sys.sleep(2)
    m <- mem(pids)
    add(sprintf("mirai %s (2 daemons, %s)", utils::packageVersion("mirai"), if (disp) "dispatcher" else "no dispatcher"),
        r, tp, st, m$sum[["rss"]], m$sum[["pss"]])
    if (!disp) mirai_one <- m$each
    mirai::daemons(0)
  }
}

# PSOCK
t0 <- Sys.time(); cl <- parallel::makePSOCKcluster(2); invisible(parallel::clusterEvalQ(cl[1], 1)); st <- secs(t0)
r <- rt(function() parallel::clusterEvalQ(cl[1], 1), n_rt)
t0 <- Sys.time(); out <- parallel::clusterApplyLB(cl, seq_len(n_map), identity); tp <- n_map / secs(t0)
pids <- unlist(parallel::clusterEvalQ(cl, Sys.getpid()))
m <- mem(pids)
add("PSOCK (2 workers, clusterApplyLB)", r, tp, st, m$sum[["rss"]], m$sum[["pss"]])
parallel::stopCluster(cl)

tab <- do.call(rbind, unname(rows))
cat(sprintf("R %s, %d cores, load average at start: %s, at end: %s\n", getRversion(), parallel::detectCores(),
            paste(strsplit(load0, " ")[[1]][1:3], collapse = " "), paste(strsplit(readLines("/proc/loadavg"), " ")[[1]][1:3], collapse = " ")))
cat(sprintf("round trips: %d sequential after 200 warm-up; map: %d elements; RSS/PSS: the worker side's processes summed (hako: its host process with both sandboxes)\n", n_rt, n_map))
print(tab, right = FALSE)
if (has_mirai) {
  h <- rows[[1]]
  nd <- rows[[grep("no dispatcher", names(rows))]]
  cat("\nGoals (hako / mirai without dispatcher; <= 1 is met for times and memory, >= 1 for rates):\n")
  cat(sprintf("  round trip p50: %.2f (%.3f vs %.3f ms)\n", h$p50_ms / nd$p50_ms, h$p50_ms, nd$p50_ms))
  cat(sprintf("  round trip p99: %.2f (%.3f vs %.3f ms)\n", h$p99_ms / nd$p99_ms, h$p99_ms, nd$p99_ms))
  cat(sprintf("  map rate:       %.2f (%d vs %d /s)\n", h$map_per_s / nd$map_per_s, h$map_per_s, nd$map_per_s))
  cat(sprintf("  start:          %.2f (%.3f vs %.3f s)\n", h$start_s / nd$start_s, h$start_s, nd$start_s))
  cat(sprintf("  idle RSS, one hako daemon process / one mirai daemon: %.2f (%.1f vs %.1f MB; PSS %.1f vs %.1f MB)\n",
              hako_one[["rss", 1]] / mirai_one[["rss", 1]], hako_one[["rss", 1]], mirai_one[["rss", 1]], hako_one[["pss", 1]], mirai_one[["pss", 1]]))
  cat(sprintf("  idle RSS, hako host (2 in-process daemons) / one mirai daemon: %.2f (%.1f vs %.1f MB; %.1f MB per hako daemon)\n",
              h$rss_mb / mirai_one[["rss", 1]], h$rss_mb, mirai_one[["rss", 1]], h$rss_mb / 2))
  cat(sprintf("  idle RSS, worker side for 2 workers: %.2f (%.1f vs %.1f MB)\n", h$rss_mb / nd$rss_mb, h$rss_mb, nd$rss_mb))
  if (chunked) {
    cat(sprintf("  chunked map rate / mirai's: %.1fx (%d vs %d /s; goal >= 10x)\n",
                rows[[2]]$map_per_s / nd$map_per_s, rows[[2]]$map_per_s, nd$map_per_s))
  }
}
