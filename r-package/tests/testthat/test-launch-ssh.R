# launch_remote(remote = ssh_config()) against a real OpenSSH server on
# 127.0.0.1 (see helper-engines.R), started and stopped here.

# Waits for `n` daemons on profile `cp`, else fails with what the engine and
# the daemons said.
expect_daemons <- function(n, cp, logs, wait = 90) {
  ok <- wait_until(function() info(.compute = cp)[["connections"]] == n, wait)
  if (!ok) {
    fail(sprintf("%d daemon(s) did not join within %d s; logs:\n%s", n, wait, files_text(logs)))
  }
  ok
}

# Two tasks running at once: each daemon took one.
expect_both_busy <- function(cp, logs) {
  ms <- list(hako({ Sys.sleep(2); "a" }, .compute = cp), hako({ Sys.sleep(2); "b" }, .compute = cp))
  busy <- wait_until(function() info(.compute = cp)[["executing"]] == 2L, 30)
  expect_true(busy, info = files_text(logs))
  expect_equal(collect_hako(ms), list("a", "b"))
}

test_that("launch_remote(ssh_config()) starts daemons over a real sshd; the token is on no command line", {
  sshd <- start_sshd()
  on.exit(expect_true(stop_sshd(sshd)))
  on.exit(reset_all(), add = TRUE, after = FALSE)
  d <- daemons(url = host_url(host = "127.0.0.1"), .compute = "ssh")
  cfg <- ssh_config(sprintf("ssh://127.0.0.1:%d", sshd$port), args = sshd$args, timeout = 10)
  expect_output(print(cfg), "SSH launch configuration: ssh://127.0.0.1:")
  cmds <- launch_remote(2, remote = cfg, memory = 256, .compute = "ssh")
  expect_s3_class(cmds, "hakoCommands")
  expect_length(cmds, 2)
  expect_length(attr(cmds, "pids"), 2)
  expect_false(any(grepl(d$token, cmds, fixed = TRUE)))
  expect_match(cmds[[1]], "read -r HAKO_TOKEN", fixed = TRUE)
  expect_match(cmds[[2]], "--name ssh-2", fixed = TRUE)
  expect_output(print(cmds), "started over ssh")
  logs <- c(sshd$log, attr(cmds, "logs"))
  expect_daemons(2L, "ssh", logs)
  # the daemons run (exec'd by the remote shell) and no process shows the token
  ps <- ps_args()
  expect_equal(sum(startsWith(ps, paste(hako_binary(), "daemon", d$url))), 2L, info = paste(ps, collapse = "\n"))
  expect_false(any(grepl(d$token, ps, fixed = TRUE)))
  expect_both_busy("ssh", logs)
  expect_equal(hako_map(1:6, function(i) i^2, .compute = "ssh")[.flat], (1:6)^2)
  # the daemons leave with the host, and their ssh sessions end
  daemons(0, .compute = "ssh")
  for (pid in attr(cmds, "pids")) {
    expect_true(wait_until(function() !proc_alive(pid), 30), info = files_text(logs))
  }
  expect_false(any(startsWith(ps_args(), paste(hako_binary(), "daemon", d$url))))
})

test_that("daemons(n, url = , remote = ssh_config()) launches n daemons with the host, as in mirai", {
  sshd <- start_sshd()
  on.exit(expect_true(stop_sshd(sshd)))
  on.exit(reset_all(), add = TRUE, after = FALSE)
  d <- daemons(2, url = host_url(host = "127.0.0.1"), .compute = "with",
               remote = ssh_config(sprintf("ssh://127.0.0.1:%d", sshd$port), args = sshd$args))
  expect_equal(d$n, 0L)
  expect_length(d$launched, 2)
  expect_daemons(2L, "with", c(sshd$log, attr(d$launched, "logs")))
  expect_equal(hako_map(1:4, function(i) -i, .compute = "with")[.flat], -(1:4))
  expect_error(daemons(1, remote = ssh_config("ssh://lab1"), .compute = "nourl"), "for a host that listens")
  # a launch that fails leaves no host behind
  expect_error(daemons(1, url = host_url(host = "127.0.0.1"), .compute = "failed",
                       remote = ssh_config(sprintf("ssh://127.0.0.1:%d", sshd$port), args = sshd$args, hako = "/no/hako")),
               "no /no/hako on")
  expect_false("failed" %in% ls(hako:::.hako$profiles))
})

test_that("ssh_config(tunnel = TRUE): daemons dial 127.0.0.1 on the remote, through ssh -R", {
  sshd <- start_sshd()
  on.exit(expect_true(stop_sshd(sshd)))
  on.exit(reset_all(), add = TRUE, after = FALSE)
  # The host listens on 127.0.0.2 only, so that the daemons' 127.0.0.1:PORT
  # can only be the tunnel's end (this machine is the "remote" too).
  d <- daemons(url = host_url(host = "127.0.0.2"), .compute = "tun")
  port <- hako:::parse_url(d$url)$port
  cmds <- launch_remote(1, remote = ssh_config(sprintf("ssh://127.0.0.1:%d", sshd$port), tunnel = TRUE, args = sshd$args),
                        .compute = "tun")
  expect_match(cmds[[1]], sprintf("-R 127.0.0.1:%d:127.0.0.2:%d", port, port), fixed = TRUE)
  logs <- c(sshd$log, attr(cmds, "logs"))
  expect_daemons(1L, "tun", logs)
  ps <- ps_args()
  expect_equal(sum(startsWith(ps, paste(hako_binary(), "daemon", sprintf("wss://127.0.0.1:%d", port)))), 1L)
  expect_equal(hako(6 * 7, .compute = "tun")[], 42)
  daemons(0, .compute = "tun")
  expect_true(wait_until(function() !proc_alive(attr(cmds, "pids")), 30), info = files_text(logs))
})

test_that("launch_remote(ssh_config()): a refused login or a missing binary is an R error in ssh's and the shell's words", {
  sshd <- start_sshd()
  on.exit(expect_true(stop_sshd(sshd)))
  on.exit(reset_all(), add = TRUE, after = FALSE)
  daemons(url = host_url(host = "127.0.0.1"), .compute = "bad")
  remote <- sprintf("ssh://127.0.0.1:%d", sshd$port)
  other <- tempfile()
  system2("ssh-keygen", c("-q", "-t", "ed25519", "-N", shQuote(""), "-f", other), stdout = FALSE)
  on.exit(unlink(c(other, paste0(other, ".pub"))), add = TRUE)
  wrong <- sshd$args
  wrong[[2]] <- other
  expect_error(launch_remote(1, remote = ssh_config(remote, args = c(wrong, "-o", "IdentitiesOnly=yes")), .compute = "bad"),
               "ssh to ssh://127.0.0.1:[0-9]+ ended before the daemon started; it said:\n.*Permission denied")
  expect_error(launch_remote(1, remote = ssh_config(remote, args = sshd$args, hako = "/nonexistent/hako"), .compute = "bad"),
               "no /nonexistent/hako on .*: give ssh_config\\(hako = \\) its path there")
  expect_equal(info(.compute = "bad")[["connections"]], 0L)
})

test_that("ssh_config() and launch_remote(remote = ) refuse what they cannot do, saying why", {
  on.exit(reset_all())
  expect_error(ssh_config("lab1"), "ssh://\\[user@\\]host\\[:port\\]")
  expect_error(ssh_config("ssh://lab1", rscript = "Rscript"), "needs no R")
  expect_error(ssh_config("ssh://lab1", timeout = 0.001), "in seconds")
  cfg <- ssh_config(c("ssh://me@lab1:2222", "ssh://[::1]"))
  expect_equal(cfg$remotes[[1]]$dest, "me@lab1")
  expect_equal(cfg$remotes[[1]]$port, 2222L)
  expect_equal(cfg$remotes[[2]]$dest, "::1")
  expect_true(cfg$remotes[[2]]$loopback)
  expect_error(cluster_config(command = "condor_submit"), "sbatch \\(Slurm\\), qsub")
  expect_error(cluster_config(options = "export HAKO_TOKEN=x"), "must not set HAKO_TOKEN")
  expect_equal(cluster_config(options = "  #SBATCH --mem=2G\n   module load hako")$options, c("#SBATCH --mem=2G", "module load hako"))
  daemons(url = host_url(host = "127.0.0.1"), .compute = "refuse")
  expect_error(launch_remote(1, remote = list(command = "ssh"), .compute = "refuse"), "ssh_config\\(\\) or cluster_config\\(\\)")
  # a loopback host cannot be dialled from another machine without a tunnel
  expect_error(launch_remote(1, remote = ssh_config("ssh://lab1.example"), .compute = "refuse"), "tunnel = TRUE")
  expect_error(launch_remote(3, remote = cfg, .compute = "refuse"), "one daemon on each")
})
