# The compute set, shared by every contestant (hako, webR in Node, native R).
# Each entry is one R expression, timed on its own.
hako_bench_compute <- list(
  fib = quote({ fib <- function(n) if (n < 2) n else fib(n - 1) + fib(n - 2); fib(22) }),
  loop = quote({ s <- 0; for (i in 1:1000000) s <- s + i * 0.5; s }),
  matrix = quote({ set.seed(1); a <- matrix(runif(160000), 400); b <- a %*% a; x <- solve(a, rowSums(a)); sum(b) + sum(x) }),
  sort = quote({ set.seed(2); x <- runif(1e6); sum(sort(x)[1:10]) }),
  regex = quote({ s <- sprintf("id-%06d-%s", 1:1e5, rep_len(c("alpha", "beta", "gamma"), 1e5)); sum(grepl("^id-0[0-9]{3}5.-(beta|gamma)$", s)) + length(sub("-(\\w+)$", "_\\1", s)) }),
  serialize = quote({ set.seed(3); x <- runif(1310720); r <- serialize(x, NULL); length(unserialize(r)) })
)
