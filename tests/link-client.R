# The client link spoken with nothing but base R: the main job's bootstrap
# (tests/example-map.R) without the R package, as a worked example of
# host/PROTOCOL.md for anyone writing a client in another language.
#
# Starts `hako host --local 2`, submits one task per bootstrap replicate over
# the token-guarded loopback link and collects the results.
# Run: Rscript tests/link-client.R [n_tasks]

args <- commandArgs(trailingOnly = TRUE)
n_tasks <- if (length(args)) as.integer(args[[1]]) else 200L
hako <- Sys.getenv("HAKO_BINARY", "target/release/hako")
if (!file.exists(hako)) stop("hako binary not found at ", hako, ": build it with `cargo build --release -p hako` or set HAKO_BINARY")

link_file <- file.path(tempdir(), "hako-link")
system2(hako, c("host", "--local", "2", "--no-listen", "--link", "127.0.0.1:0", "--link-file", link_file),
        wait = FALSE, stdout = FALSE, stderr = file.path(tempdir(), "hako-host.log"))
# The first start on a machine fetches webR and compiles it (about a minute).
waited <- 0
while (!file.exists(link_file) && waited < 600) {
  if (abs(waited - 2) < 0.01) message("waiting for hako host (the first start prepares webR and compiles it)")
  Sys.sleep(0.05)
  waited <- waited + 0.05
}
if (!file.exists(link_file)) stop("hako host did not start; see ", file.path(tempdir(), "hako-host.log"))
kv <- do.call(rbind, strsplit(readLines(link_file), "\t", fixed = TRUE))
ready <- setNames(kv[, 2], kv[, 1])
addr <- strsplit(ready[["link"]], ":", fixed = TRUE)[[1]]

con <- socketConnection(addr[1], as.integer(addr[2]), open = "a+b", blocking = TRUE, timeout = 60)
u32 <- function(x) writeBin(as.integer(x), raw(), size = 4L, endian = "little")
send <- function(type, body = raw()) {
  writeBin(c(u32(length(body) + 1L), as.raw(type), body), con)
}
recv <- function() {
  len <- readBin(con, "integer", size = 4L, endian = "little")
  msg <- readBin(con, "raw", len)
  list(type = as.integer(msg[1]), body = msg[-1])
}
rd_u32 <- function(b, at) readBin(b[at:(at + 3L)], "integer", size = 4L, endian = "little")

send(0x00, c(charToRaw("HAKO"), u32(1L), charToRaw(ready[["link_token"]])))
stopifnot(recv()$type == 0x80) # READY

started <- Sys.time()
for (id in seq_len(n_tasks)) {
  task <- list(
    quote({
      set.seed(seed)
      d <- mtcars[sample(nrow(mtcars), replace = TRUE), ]
      coef(lm(mpg ~ wt, data = d))[["wt"]]
    }),
    list(seed = id)
  )
  send(0x01, c(u32(id), u32(30000L), serialize(task, NULL, version = 3L)))
}
slopes <- numeric(n_tasks)
errors <- 0L
for (k in seq_len(n_tasks)) {
  m <- recv()
  if (m$type != 0x81) next
  id <- rd_u32(m$body, 1L)
  status <- as.integer(m$body[5L])
  nchunks <- rd_u32(m$body, 6L)
  at <- 10L
  for (j in seq_len(nchunks)) at <- at + 5L + rd_u32(m$body, at + 1L)
  payload <- m$body[at:length(m$body)]
  if (status == 0L) slopes[id] <- unserialize(payload) else errors <- errors + 1L
}
elapsed <- as.numeric(difftime(Sys.time(), started, units = "secs"))
send(0x06) # SHUTDOWN
close(con)

ci <- quantile(slopes, c(0.025, 0.975))
cat(sprintf("%d bootstrap replicates on 2 sandboxed daemons in %.2f s (%.0f tasks/s), %d errors\n",
            n_tasks, elapsed, n_tasks / elapsed, errors))
cat(sprintf("slope of mpg on wt: %.3f, 95%% bootstrap CI [%.3f, %.3f]\n",
            coef(lm(mpg ~ wt, mtcars))[["wt"]], ci[[1]], ci[[2]]))
if (errors > 0L) quit(status = 1L)
