# Packages for the sandboxes. Two sources, in this order:
# 1. hako's package store: WebAssembly builds (compiled code included) that
#    `hako pkg install` put there, checked by hash; the host gets them as its
#    package set (`hako host --packages`), mounted read-only at
#    /hako/library, first in the sandbox's .libPaths().
# 2. R-only packages installed in this session's library, mounted read-only
#    at /library/<name> (a package with compiled code cannot come this way:
#    its .so is built for this machine, not for WebAssembly).
# With `repos`, names the store lacks and the repositories offer are
# installed into the store first (`hako pkg install NAME... --repo URL...`).

# What `daemons(packages = , repos = )` gives the host: list(set = names for
# --packages, mounts = --mount arguments for R-only packages of this library).
resolve_packages <- function(packages, repos = NULL) {
  if (!is.character(packages) || anyNA(packages)) {
    stop("hako: 'packages' must be a character vector of package names", call. = FALSE)
  }
  repos <- check_repos(repos)
  pk <- setdiff(unique(packages), c(sandbox_packages(), "webr"))
  if (!length(pk)) return(list(set = character(), mounts = character()))
  store <- store_packages()
  want <- setdiff(pk, store)
  if (length(want) && length(repos)) {
    offered <- repo_packages(repos)
    # An R-only package installed here stays local unless a repository
    # offers it; what it depends on comes from the repositories if they
    # offer it (its compiled dependencies cannot come from here).
    get <- if (is.null(offered)) want else intersect(want, offered)
    if (!is.null(offered)) {
      deps <- local_deps(setdiff(want, offered))
      get <- union(get, intersect(setdiff(deps, store), offered))
    }
    if (length(get)) {
      pkg_install(get, repos)
      store <- store_packages()
    }
  }
  local <- local_packages(setdiff(pk, store), store, repos)
  list(set = unique(c(intersect(pk, store), local$set)), mounts = local$mounts)
}

# The repositories as `hako pkg install --repo` takes them: URLs as given, a
# directory as file:// URL.
check_repos <- function(repos) {
  if (is.null(repos)) return(character())
  if (!is.character(repos) || anyNA(repos) || !all(nzchar(repos))) {
    stop("hako: 'repos' must be a character vector of repository URLs (https://, file://) or directories", call. = FALSE)
  }
  dirs <- !grepl("^[A-Za-z][A-Za-z0-9+.-]*://", repos)
  repos[dirs] <- paste0("file://", normalizePath(repos[dirs], mustWork = FALSE))
  unname(repos)
}

# Names installed in hako's package store (`hako pkg list`; the store is
# $HAKO_PACKAGES, else the cache's, as for the host this session starts).
store_packages <- function() {
  out <- suppressWarnings(system2(hako_binary(), c("pkg", "list"), stdout = TRUE, stderr = FALSE))
  status <- attr(out, "status")
  if (!is.null(status) && status != 0L) {
    stop("hako: `hako pkg list` failed (exit status ", status, ")", call. = FALSE)
  }
  rows <- out[nzchar(out) & !startsWith(out, "package ")]
  sub("[[:space:]].*$", "", rows)
}

# The package names the repositories' indexes list, or NULL when none could
# be read here (then `hako pkg install` reads them and says what is wrong).
repo_packages <- function(repos) {
  contrib <- paste0(sub("/+$", "", repos), "/bin/emscripten/contrib/4.6")
  ap <- tryCatch(suppressWarnings(utils::available.packages(contriburl = contrib, filters = list(), quiet = TRUE, ignore_repo_cache = TRUE)),
                 error = function(e) NULL)
  if (is.null(ap) || !nrow(ap)) return(NULL)
  unique(ap[, "Package"])
}

# Runs `hako pkg install` showing its progress in this session as the
# start-up steps are shown; an R error with its own words if a name did not
# install. Ctrl-C stops it (the store is unchanged: it installs all or none).
pkg_install <- function(names, repos) {
  log <- tempfile("hako-pkg-install-", fileext = ".log")
  on.exit(unlink(log), add = TRUE)
  args <- c("pkg", "install", names, as.vector(rbind("--repo", repos)))
  pid <- spawn(hako_binary(), args, log)
  on.exit(if (pid_alive(pid)) tools::pskill(pid), add = TRUE)
  pr <- install_progress(log)
  repeat {
    alive <- pid_alive(pid)
    install_poll(pr)
    if (!alive) break
    Sys.sleep(0.05)
  }
  install_done(pr)
  absent <- setdiff(names, store_packages())
  if (length(absent)) {
    lines <- readLines(log, warn = FALSE)
    stop(sprintf("hako: `hako pkg install %s` did not install %s:\n%s", paste(names, collapse = " "),
                 paste(absent, collapse = ", "), safe_text(paste(utils::tail(lines, 5L), collapse = "\n"))),
         call. = FALSE)
  }
  invisible(names)
}

install_progress <- function(log) {
  pr <- log_reader(log)
  pr$cli <- requireNamespace("cli", quietly = TRUE)
  pr$env <- new.env()
  pr$stepping <- FALSE
  pr
}

# `hako pkg install`'s lines as steps (a spinner while one runs): reading
# the indexes, the plan, each download (its checks time with it); the
# packages installed are said once at the end.
install_poll <- function(pr) {
  lines <- safe_text(sub("^hako pkg: ", "", log_lines(pr)))
  lines <- lines[nzchar(lines) & !grepl("^[A-Za-z0-9.]+ [^ ]+ checked \\(.* in [0-9.]+ s$", lines)]
  done <- grepl("^installed ", lines)
  pr$installed <- c(pr$installed, sub("^installed ", "", lines[done]))
  for (s in sub("^downloading .*/", "downloading ", lines[!done])) {
    if (!pr$cli) {
      message("hako pkg: ", s)
    } else {
      cli::cli_progress_step(escape_braces(s), spinner = TRUE, .envir = pr$env)
      pr$stepping <- TRUE
    }
  }
  if (pr$stepping && cli::is_dynamic_tty()) cli::cli_progress_update(.envir = pr$env)
  invisible()
}

install_done <- function(pr) {
  if (pr$stepping) cli::cli_progress_done(.envir = pr$env)
  pr$stepping <- FALSE
  if (length(pr$installed)) {
    what <- paste0("installed into hako's package store: ", paste(pr$installed, collapse = ", "))
    if (pr$cli) cli::cli_alert_success(escape_braces(what)) else message("hako pkg: ", what)
  }
  invisible()
}

# R-only packages of this session's library (with what they depend on): the
# --mount arguments showing them at /library/<name>, and the store's names
# among their dependencies (for the set). A name neither here nor in the
# store, or here only with compiled code, is an error saying how to add it.
local_packages <- function(packages, store = character(), repos = character()) {
  none <- list(set = character(), mounts = character())
  if (!length(packages)) return(none)
  have <- c(sandbox_packages(), "webr")
  db <- local_db()
  missing <- setdiff(packages, rownames(db))
  if (length(missing)) {
    stop(sprintf("hako: package(s) not installed in hako's package store or in this session's library: %s; %s",
                 paste(missing, collapse = ", "), how_to_add(missing, repos)), call. = FALSE)
  }
  deps <- tools::package_dependencies(packages, db = db, which = c("Depends", "Imports"), recursive = TRUE)
  all <- setdiff(unique(c(packages, unlist(deps, use.names = FALSE))), c(have, "R"))
  from_store <- intersect(all, store)
  all <- setdiff(all, store)
  absent <- setdiff(all, rownames(db))
  if (length(absent)) {
    stop(sprintf("hako: package(s) needed by %s are not installed in hako's package store or in this session's library: %s; %s",
                 paste(packages, collapse = ", "), paste(absent, collapse = ", "), how_to_add(absent, repos)), call. = FALSE)
  }
  paths <- file.path(db[all, "LibPath"], all)
  compiled <- all[dir.exists(file.path(paths, "libs"))]
  if (length(compiled)) {
    # the store's build of a package brings its dependencies: name the asked-for ones
    asked <- packages[vapply(packages, function(p) any(c(p, deps[[p]]) %in% compiled), NA)]
    stop(sprintf("hako: package(s) with compiled code built for this machine, which the WebAssembly sandbox cannot run: %s; %s",
                 paste(compiled, collapse = ", "), how_to_add(asked, repos)), call. = FALSE)
  }
  list(set = from_store, mounts = as.vector(rbind("--mount", paste0(normalizePath(paths), ":/library/", all, ":ro"))))
}

# This session's installed packages (the first of each name on .libPaths()).
local_db <- function() {
  db <- utils::installed.packages(fields = c("Depends", "Imports"))
  db <- db[!duplicated(db[, "Package"]), , drop = FALSE]
  rownames(db) <- db[, "Package"]
  db
}

# What the packages installed here depend on (recursively), base R aside.
local_deps <- function(packages) {
  db <- local_db()
  packages <- intersect(packages, rownames(db))
  if (!length(packages)) return(character())
  deps <- tools::package_dependencies(packages, db = db, which = c("Depends", "Imports"), recursive = TRUE)
  setdiff(unique(unlist(deps, use.names = FALSE)), c(sandbox_packages(), "webr", "R"))
}

# How to give the sandboxes `pk`: a WebAssembly build in hako's store.
how_to_add <- function(pk, repos) {
  if (length(repos)) {
    return(sprintf("the repositories %s do not offer it: build it into a repository of your own with `hako pkg build SOURCE.tar.gz --repo DIR` and add file://DIR to 'repos'",
                   paste(repos, collapse = ", ")))
  }
  sprintf("install a WebAssembly build into hako's package store with daemons(packages = c(%s), repos = \"URL\") or, in a shell, `hako pkg install %s --repo URL` (webR's repository https://repo.r-wasm.org, or one `hako pkg build` wrote)",
          paste0("\"", pk, "\"", collapse = ", "), paste(pk, collapse = " "))
}

# Host arguments for resolve_packages()'s result.
package_args <- function(r) {
  c(if (length(r$set)) c("--packages", paste(r$set, collapse = ",")), r$mounts)
}

# Loads the set's namespaces once on every daemon (as everywhere(): the state
# each sandbox resets to has them), so a task using them does not load them
# again: a reset costs milliseconds, loading purrr half a second. Attaching
# (library()) stays the task's own, undone by the reset.
preload_packages <- function(set, compute) {
  expr <- bquote({
    invisible(lapply(.(set), loadNamespace))
    NULL
  })
  tryCatch(do.call(everywhere, list(expr, .compute = compute, .timeout = 600000)), error = function(e) {
    reset_profile(compute)
    stop("hako: the sandboxes could not load their packages: ", conditionMessage(e), call. = FALSE)
  })
  invisible()
}

# `--mount` arguments for R-only packages of this library (daemon(): a
# volunteer's compiled packages come from the host's set, not from here).
package_mounts <- function(packages) {
  if (!is.character(packages) || anyNA(packages)) {
    stop("hako: 'packages' must be a character vector of package names", call. = FALSE)
  }
  local_packages(setdiff(unique(packages), c(sandbox_packages(), "webr")))$mounts
}
