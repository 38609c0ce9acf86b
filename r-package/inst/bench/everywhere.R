# everywhere() benchmark: does everywhere() make later tasks slower? The
# round trip of hako(1)[] (p50/p99 over n sequential tasks, 2 daemons) with
# no everywhere() code, after 200 everywhere(NULL) calls, and after
# everywhere(library(stats4)), with the ratios to the first (goal: within
# 1.2x); and what one everywhere() call itself costs.
# Run: HAKO_BINARY=target/release/hako Rscript r-package/inst/bench/everywhere.R [n] [calls]
suppressMessages(library(hako))
args <- commandArgs(trailingOnly = TRUE)
n <- if (length(args) >= 1) as.integer(args[[1]]) else 300L
calls <- if (length(args) >= 2) as.integer(args[[2]]) else 200L
ms <- function(f, n) {
  x <- numeric(n)
  for (i in seq_len(n)) { t0 <- Sys.time(); f(); x[i] <- as.numeric(Sys.time() - t0, units = "secs") }
  x * 1000
}
round_trip <- function() ms(function() hako(1)[], n)

daemons(2)
invisible(ms(function() hako(1)[], 50)) # warm up
rows <- list()
add <- function(name, x, base = NULL) {
  p50 <- stats::quantile(x, 0.5)
  rows[[length(rows) + 1L]] <<- data.frame(
    case = name, p50_ms = round(p50, 3), p99_ms = round(stats::quantile(x, 0.99), 3),
    ratio = if (is.null(base)) 1 else round(p50 / base, 2), row.names = NULL)
  invisible(p50)
}
base <- add("no everywhere()", round_trip())
ew <- ms(function() everywhere(NULL), calls)
add(sprintf("after %d everywhere(NULL)", calls), round_trip(), base)
ew_lib <- ms(function() everywhere(library(stats4)), 1)
stopifnot(hako("package:stats4" %in% search())[])
add("after everywhere(library(stats4))", round_trip(), base)
daemons(0)

cat(sprintf("hako(1)[] round trip, %d tasks per case, 2 daemons\n", n))
print(do.call(rbind, rows), row.names = FALSE)
cat(sprintf("everywhere(NULL) call: p50 %.2f ms, p99 %.2f ms (%d calls); everywhere(library(stats4)): %.0f ms\n",
            stats::quantile(ew, 0.5), stats::quantile(ew, 0.99), calls, ew_lib))
