# launch_remote(remote = cluster_config()) against a real single-node Slurm
# (munged, slurmctld, slurmd: see helper-engines.R), started and stopped here.

test_that("launch_remote(cluster_config()) submits daemons to a real Slurm with sbatch; daemons(0) cancels them", {
  sl <- start_slurm()
  on.exit(expect_true(stop_slurm(sl)))
  on.exit(reset_all(), add = TRUE, after = FALSE)
  d <- daemons(url = host_url(host = "127.0.0.1"), .compute = "slurm")
  cfg <- cluster_config(options = sprintf("#SBATCH --job-name=hako-test
                                           #SBATCH --output=%s/jobs/%%j.out
                                           #SBATCH --cpus-per-task=1", sl$dir))
  expect_output(print(cfg), "cluster launch configuration: sbatch")
  jobs <- launch_remote(2, remote = cfg, memory = 256, .compute = "slurm")
  expect_s3_class(jobs, "hakoCommands")
  expect_length(attr(jobs, "jobs"), 2)
  expect_match(jobs[[1]], "^sbatch --export=ALL < .*slurm-1\\.sh \\(job [0-9]+\\)$")
  expect_output(print(jobs), "token in each job's environment")
  expect_false(any(grepl(d$token, jobs, fixed = TRUE)))
  # the job scripts hold the daemon's command, never the token
  scripts <- sub("^.* < (.*) \\(job .*$", "\\1", unclass(jobs))
  for (f in scripts) {
    text <- readLines(f)
    expect_match(text[[length(text)]], paste("^exec", hako_binary(), "daemon", d$url, "--fingerprint SHA256:"))
    expect_false(any(grepl(d$token, text, fixed = TRUE)))
  }
  logs <- function() c(sl$logs, list.files(file.path(sl$dir, "jobs"), full.names = TRUE))
  ok <- wait_until(function() info(.compute = "slurm")[["connections"]] == 2L, 120)
  if (!ok) {
    fail(sprintf("the 2 Slurm jobs' daemons did not join within 2 minutes; squeue: %s; logs:\n%s",
                 paste(system2("squeue", stdout = TRUE), collapse = "\n"), files_text(logs())))
  }
  expect_setequal(slurm_jobs(), attr(jobs, "jobs"))
  ps <- ps_args()
  expect_equal(sum(startsWith(ps, paste(hako_binary(), "daemon", d$url))), 2L, info = paste(ps, collapse = "\n"))
  expect_false(any(grepl(d$token, ps, fixed = TRUE)))
  # both daemons take a task at once
  ms <- list(hako({ Sys.sleep(2); "a" }, .compute = "slurm"), hako({ Sys.sleep(2); "b" }, .compute = "slurm"))
  expect_true(wait_until(function() info(.compute = "slurm")[["executing"]] == 2L, 30), info = files_text(logs()))
  expect_equal(collect_hako(ms), list("a", "b"))
  expect_equal(hako_map(1:6, function(i) i + 1, .compute = "slurm")[.flat], 2:7)
  # a third job still queued (the node's 2 CPUs are taken) is cancelled too
  more <- launch_remote(1, remote = cfg, .compute = "slurm")
  expect_match(more[[1]], "slurm-3\\.sh")
  # a refused submission is an R error in sbatch's words
  expect_error(launch_remote(1, remote = cluster_config(options = "#SBATCH --partition=nowhere"), .compute = "slurm"),
               "sbatch could not submit the daemon's job \\(exit status 1\\):\n.*invalid partition")
  daemons(0, .compute = "slurm")
  expect_true(wait_until(function() !length(slurm_jobs()), 30),
              info = paste(c(system2("squeue", stdout = TRUE), files_text(logs())), collapse = "\n"))
  expect_true(wait_until(function() !any(startsWith(ps_args(), paste(hako_binary(), "daemon", d$url))), 30))
})
