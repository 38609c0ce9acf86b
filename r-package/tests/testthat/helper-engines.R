# Real engines the launcher tests start on loopback and stop again: OpenSSH's
# sshd with throwaway keys, and a single-node Slurm (munged, slurmctld,
# slurmd) with a throwaway munge key, all under a temporary directory. They
# run as root in CI (sshd and slurmd need it); a missing engine is a test
# failure that says to run tests/setup.sh, never a skip.

# The engine's path (from PATH, else Debian's sbin directories, which a
# non-root PATH lacks), or a failure that says how to install it. The
# engines need root (sshd's privilege separation, slurmd): CI runs as root.
need_engine <- function(name) {
  if (Sys.info()[["effective_user"]] != "root") {
    stop(sprintf("the launcher tests start %s, which needs root (CI runs tests/run.sh as root)", name), call. = FALSE)
  }
  found <- Sys.which(name)
  if (!nzchar(found)) found <- Filter(file.exists, file.path(c("/usr/sbin", "/sbin"), name))[1L]
  if (is.na(found) || !nzchar(found)) stop(sprintf("%s is missing: run tests/setup.sh", name), call. = FALSE)
  unname(found)
}

free_port <- function() {
  for (i in 1:200) {
    port <- sample(20000:60000, 1L)
    s <- tryCatch(suppressWarnings(serverSocket(port)), error = function(e) NULL)
    if (!is.null(s)) {
      close(s)
      return(port)
    }
  }
  stop("no free port found")
}

# Starts a command in the background, its output in `log`; returns its pid.
bg_start <- function(cmd, args, log) {
  line <- paste(c(shQuote(cmd), vapply(args, shQuote, "")), collapse = " ")
  out <- system2("/bin/sh", c("-c", shQuote(sprintf("%s </dev/null >>%s 2>&1 & echo $!", line, shQuote(log)))),
                 stdout = TRUE)
  as.integer(out[length(out)])
}

# A live process (a zombie waiting for its reaper counts as gone).
proc_alive <- function(pid) {
  st <- suppressWarnings(system2("ps", c("-o", "stat=", "-p", pid), stdout = TRUE, stderr = FALSE))
  length(st) > 0L && nzchar(trimws(st[[1L]])) && !startsWith(trimws(st[[1L]]), "Z")
}

# Waits up to `wait` seconds for `cond()`; TRUE if it came.
wait_until <- function(cond, wait) {
  deadline <- Sys.time() + wait
  repeat {
    if (isTRUE(tryCatch(cond(), error = function(e) FALSE))) return(TRUE)
    if (Sys.time() > deadline) return(FALSE)
    Sys.sleep(0.1)
  }
}

# SIGTERM, then SIGKILL after a grace; TRUE once the process is gone.
bg_stop <- function(pid) {
  if (!proc_alive(pid)) return(TRUE)
  tools::pskill(pid, tools::SIGTERM)
  if (wait_until(function() !proc_alive(pid), 15)) return(TRUE)
  tools::pskill(pid, tools::SIGKILL)
  wait_until(function() !proc_alive(pid), 5)
}

files_text <- function(files) {
  files <- files[file.exists(files)]
  paste(vapply(files, function(f) {
    paste(c(sprintf("--- %s", f), utils::tail(readLines(f, warn = FALSE), 30L)), collapse = "\n")
  }, ""), collapse = "\n")
}

ps_args <- function() system2("ps", c("-eo", "args"), stdout = TRUE)

# --- OpenSSH ------------------------------------------------------------------

# sshd on 127.0.0.1:<free port>, accepting one throwaway client key (root
# may log in with it, in this configuration only). `args` are the ssh
# client's options for ssh_config(args = ).
start_sshd <- function() {
  sshd <- need_engine("sshd")
  need_engine("ssh")
  need_engine("ssh-keygen")
  d <- tempfile("sshd-")
  dir.create(d, mode = "0700")
  for (k in c("host_key", "client_key")) {
    system2("ssh-keygen", c("-q", "-t", "ed25519", "-N", shQuote(""), "-f", file.path(d, k)), stdout = FALSE)
  }
  file.copy(file.path(d, "client_key.pub"), file.path(d, "authorized_keys"))
  # sshd's privilege separation directory is compiled in (Debian's service
  # creates it at boot); an empty directory, removed again if made here.
  made_run <- !dir.exists("/run/sshd")
  if (made_run) dir.create("/run/sshd", mode = "0755")
  port <- free_port()
  conf <- file.path(d, "sshd_config")
  writeLines(c(sprintf("ListenAddress 127.0.0.1:%d", port), sprintf("HostKey %s/host_key", d),
               sprintf("AuthorizedKeysFile %s/authorized_keys", d), sprintf("PidFile %s/sshd.pid", d),
               "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
               "UsePAM no", "StrictModes no", "AllowTcpForwarding yes", "LogLevel VERBOSE"), conf)
  log <- file.path(d, "sshd.log")
  pid <- bg_start(sshd, c("-D", "-e", "-f", conf), log)
  s <- list(pid = pid, port = port, dir = d, log = log, made_run = made_run,
            args = c("-i", file.path(d, "client_key"), "-o", "StrictHostKeyChecking=no",
                     "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"))
  if (!wait_until(function() any(grepl("Server listening", readLines(log, warn = FALSE))), 15)) {
    stop_sshd(s)
    stop("sshd did not start:\n", files_text(log), call. = FALSE)
  }
  s
}

stop_sshd <- function(s) {
  gone <- bg_stop(s$pid)
  if (s$made_run) unlink("/run/sshd", recursive = TRUE)
  unlink(s$dir, recursive = TRUE)
  gone
}

# --- Slurm ----------------------------------------------------------------------

# munged with a throwaway key, slurmctld and slurmd with a minimal
# single-node slurm.conf (this machine, on free ports), state, spool and
# logs under a temporary directory; SLURM_CONF points the clients (sbatch,
# sinfo, squeue, scancel) at it until stop_slurm(). Waits (at most a
# minute) for the node to be idle.
start_slurm <- function() {
  bin <- vapply(c("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel"), need_engine, "")
  # munged wants every directory above its socket searchable by all: not
  # R's private session directory.
  d <- tempfile("hako-slurm-", tmpdir = "/tmp")
  dir.create(d, mode = "0711")
  Sys.chmod(d, "0711")
  for (sub in c("munge", "state", "spool", "log", "jobs")) dir.create(file.path(d, sub), mode = "0755")
  dir.create(file.path(d, "key"), mode = "0700")
  s <- new.env()
  s$dir <- d
  s$pids <- integer()
  s$old_conf <- Sys.getenv("SLURM_CONF", unset = NA)
  s$logs <- file.path(d, "log", c("munged.out", "slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"))
  fail <- function(what) {
    text <- files_text(c(s$logs, list.files(file.path(d, "jobs"), full.names = TRUE)))
    stop_slurm(s)
    stop(what, ":\n", text, call. = FALSE)
  }
  key <- file.path(d, "key", "munge.key")
  system2(bin[["mungekey"]], c("-c", "-k", key), stdout = FALSE, stderr = FALSE)
  sock <- file.path(d, "munge", "munge.sock")
  s$pids <- c(s$pids, bg_start(bin[["munged"]], c("-F", paste0("--key-file=", key), paste0("--socket=", sock),
                                           paste0("--pid-file=", file.path(d, "munge", "munged.pid")),
                                           paste0("--seed-file=", file.path(d, "munge", "munged.seed")),
                                           paste0("--log-file=", file.path(d, "log", "munged.log"))),
                                 file.path(d, "log", "munged.out")))
  if (!wait_until(function() file.exists(sock), 15)) fail("munged did not start")
  node <- system2(bin[["slurmd"]], "-C", stdout = TRUE)[[1L]]
  host <- sub("^NodeName=([^ ]+).*$", "\\1", node)
  conf <- file.path(d, "slurm.conf")
  writeLines(c("ClusterName=hakotest", sprintf("SlurmctldHost=%s(127.0.0.1)", host),
               sprintf("SlurmctldPort=%d", free_port()), sprintf("SlurmdPort=%d", free_port()),
               "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge", "CredType=cred/munge",
               sprintf("AuthInfo=socket=%s", sock),
               sprintf("StateSaveLocation=%s/state", d), sprintf("SlurmdSpoolDir=%s/spool", d),
               sprintf("SlurmctldPidFile=%s/slurmctld.pid", d), sprintf("SlurmdPidFile=%s/slurmd.pid", d),
               sprintf("SlurmctldLogFile=%s/log/slurmctld.log", d), sprintf("SlurmdLogFile=%s/log/slurmd.log", d),
               "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
               "SelectTypeParameters=CR_Core", "MpiDefault=none", "ReturnToService=2", "SchedulerType=sched/builtin",
               "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
               "MailProg=/bin/true",
               paste(node, "NodeAddr=127.0.0.1 State=UNKNOWN"),
               "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"), conf)
  s$conf <- conf
  Sys.setenv(SLURM_CONF = conf)
  s$pids <- c(s$pids, bg_start(bin[["slurmctld"]], c("-D", "-i", "-f", conf), file.path(d, "log", "slurmctld.out")))
  s$pids <- c(s$pids, bg_start(bin[["slurmd"]], c("-D", "-f", conf), file.path(d, "log", "slurmd.out")))
  idle <- function() {
    st <- suppressWarnings(system2("sinfo", c("-h", "-o", "%t"), stdout = TRUE, stderr = FALSE))
    identical(trimws(st), "idle")
  }
  if (!wait_until(idle, 60)) fail("the Slurm node did not become idle within a minute")
  s
}

# The jobs Slurm still knows (pending or running).
slurm_jobs <- function() {
  out <- suppressWarnings(system2("squeue", c("-h", "-o", "%i"), stdout = TRUE, stderr = FALSE))
  trimws(out[nzchar(trimws(out))])
}

# Cancels what is left, then stops slurmd, slurmctld and munged (in that
# order: a job's slurmstepd outlives slurmd, so jobs go first). TRUE if
# every process is gone.
stop_slurm <- function(s) {
  if (length(s$pids) >= 3L && proc_alive(s$pids[[2L]])) {
    suppressWarnings(system2("scancel", c("-u", Sys.info()[["user"]]), stdout = FALSE, stderr = FALSE))
    wait_until(function() !length(slurm_jobs()), 30)
  }
  gone <- vapply(rev(s$pids), bg_stop, NA)
  if (is.na(s$old_conf)) Sys.unsetenv("SLURM_CONF") else Sys.setenv(SLURM_CONF = s$old_conf)
  unlink(s$dir, recursive = TRUE)
  all(gone)
}
