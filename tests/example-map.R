# The main job: a bootstrap of a regression, mapped over two sandboxed
# daemons from R with the hako package, exactly as an R user would.
#
# Run: Rscript tests/example-map.R [n_tasks]
# (needs the package installed: R CMD INSTALL r-package; the binary is found
# via HAKO_BINARY, the PATH, or this repository's target/release/hako).

library(hako)

args <- commandArgs(trailingOnly = TRUE)
n_tasks <- if (length(args)) as.integer(args[[1]]) else 200L
if (!nzchar(Sys.getenv("HAKO_BINARY")) && !nzchar(Sys.which("hako")) &&
    file.exists("target/release/hako")) {
  options(hako.binary = normalizePath("target/release/hako"))
}

daemons(2, seed = 1) # a private host with two sandboxed daemons
started <- Sys.time()
boot <- hako_map(seq_len(n_tasks), function(i) {
  d <- mtcars[sample(nrow(mtcars), replace = TRUE), ]
  coef(lm(mpg ~ wt, data = d))[["wt"]]
})[]
elapsed <- as.numeric(difftime(Sys.time(), started, units = "secs"))
daemons(0)

failed <- vapply(boot, is_error_value, logical(1))
slopes <- unlist(boot[!failed])
ci <- quantile(slopes, c(0.025, 0.975))
cat(sprintf("%d bootstrap replicates on 2 sandboxed daemons in %.2f s (%.0f tasks/s), %d errors\n",
            n_tasks, elapsed, n_tasks / elapsed, sum(failed)))
cat(sprintf("slope of mpg on wt: %.3f, 95%% bootstrap CI [%.3f, %.3f]\n",
            coef(lm(mpg ~ wt, mtcars))[["wt"]], ci[[1]], ci[[2]]))
if (any(failed)) quit(status = 1L)
