# Packages from hako's package store (WebAssembly builds, compiled code
# included) in the sandboxes, installed from the test repository that
# tests/wasm-repo.sh builds with `hako pkg build` (tests/run.sh exports its
# directory as HAKO_TEST_WASM_REPO). The store is a private one for this file.

wasm_repo <- function() {
  d <- Sys.getenv("HAKO_TEST_WASM_REPO")
  if (!nzchar(d)) {
    skip("HAKO_TEST_WASM_REPO is not set: build the test repository with `bash tests/wasm-repo.sh` and export the directory it prints (tests/run.sh does)")
  }
  if (!file.exists(file.path(d, "bin/emscripten/contrib/4.6/PACKAGES"))) {
    stop("HAKO_TEST_WASM_REPO=", d, " is not a repository built by tests/wasm-repo.sh")
  }
  paste0("file://", normalizePath(d))
}

old_store <- Sys.getenv("HAKO_PACKAGES", unset = NA)
Sys.setenv(HAKO_PACKAGES = tempfile("hako-store-"))

test_that("daemons(packages =, repos =) installs into hako's store, then the sandboxes run purrr", {
  repo <- wasm_repo()
  on.exit(reset_all())
  msgs <- capture.output(daemons(2, packages = "purrr", repos = repo), type = "message")
  # the install's progress is shown, as the start-up steps are
  expect_true(any(grepl("installed into hako's package store: .*purrr", msgs)))
  expect_true(all(c("purrr", "rlang", "vctrs", "cli") %in% hako:::store_packages()))
  expect_equal(hako(purrr::map_dbl(1:3, function(x) x^2))[], c(1, 4, 9))
  expect_equal(hako_map(1:4, function(i) purrr::map_dbl(seq_len(i), sqrt)[i])[.flat], sqrt(1:4))
  daemons(0)
  # installed now: no repository needed, nothing installed again
  msgs <- capture.output(daemons(1, packages = "purrr"), type = "message")
  expect_false(any(grepl("installed", msgs)))
  expect_equal(hako(purrr::map_chr(c("a", "b"), toupper))[], c("A", "B"))
})

test_that("a reset after a task that loaded packages is pristine", {
  repo <- wasm_repo()
  on.exit(reset_all())
  daemons(1, packages = "purrr", repos = repo)
  # the set is loaded once per daemon (not attached): tasks do not pay for it
  before <- hako(list(loaded = loadedNamespaces(), search = search()))[]
  expect_true(all(c("purrr", "rlang", "vctrs") %in% before$loaded))
  expect_false("package:purrr" %in% before$search)
  a <- hako({
    library(purrr)
    library(stats4)
    assign("mine", 1, envir = globalenv())
    c(attached = "package:purrr" %in% search(), stats4 = "stats4" %in% loadedNamespaces())
  })[]
  expect_equal(a, c(attached = TRUE, stats4 = TRUE))
  b <- hako(list(loaded = loadedNamespaces(), search = search(), mine = exists("mine")))[]
  expect_setequal(b$loaded, before$loaded)
  expect_equal(b$search, before$search)
  expect_false(b$mine)
  expect_equal(hako(purrr::map_int(1:2, function(x) x * 2L))[], c(2L, 4L))
})

test_that("store packages and R-only packages of this library together", {
  repo <- wasm_repo()
  skip_if_not_installed("foreach")
  on.exit(reset_all())
  daemons(1, packages = c("purrr", "foreach"), repos = repo)
  r <- hako(list(purrr = purrr::map_dbl(1:2, function(x) x + 1),
                 foreach = requireNamespace("foreach", quietly = TRUE),
                 where = c(find.package("purrr"), find.package("foreach"))))[]
  expect_equal(r$purrr, c(2, 3))
  expect_true(r$foreach)
  # compiled from the store (verified by hash), R-only from this library
  expect_match(r$where[[1]], "^/hako/library/")
  expect_match(r$where[[2]], "^/library/")
})

test_that("an R-only package of this library gets its compiled dependencies from the repository", {
  repo <- wasm_repo()
  skip_if_not_installed("sessioninfo") # R-only, imports cli (compiled), not in the test repository
  on.exit(reset_all())
  daemons(1, packages = "sessioninfo", repos = repo)
  r <- hako(list(where = c(find.package("sessioninfo"), find.package("cli")),
                 ok = is.function(sessioninfo::package_info)))[]
  expect_match(r$where[[1]], "^/library/")
  expect_match(r$where[[2]], "^/hako/library/")
  expect_true(r$ok)
})

test_that("a daemon dialling in over wss gets the set from the host", {
  repo <- wasm_repo()
  on.exit(reset_all())
  daemons(url = host_url(host = "127.0.0.1"), packages = "purrr", repos = repo)
  launch_local(1)
  expect_equal(hako(purrr::map_dbl(1:3, function(x) x^2))[], c(1, 4, 9))
  expect_match(hako(find.package("purrr"))[], "^/hako/library/")
})

test_that("a package the sandbox cannot get is an error saying how to add it", {
  repo <- wasm_repo()
  on.exit(reset_all())
  expect_error(daemons(1, packages = "nosuchpkg", repos = repo), "do not offer it.*hako pkg build")
  expect_error(daemons(1, packages = "nosuchpkg"), "not installed in hako's package store.*hako pkg install nosuchpkg --repo URL")
  skip_if_not_installed("testthat")
  # compiled code built for this machine: the store's build is needed
  expect_error(daemons(1, packages = "testthat"),
               "compiled code.*testthat.*daemons\\(packages = c\\(\"testthat\"\\), repos = \"URL\"\\)")
  # a task needing one the daemons were not given
  daemons(1)
  e <- hako(library(purrr))[]
  expect_true(is_hako_error(e))
  expect_match(e$message, "daemons\\(packages = c\\(\"purrr\"\\)\\).*hako pkg install purrr --repo URL")
})

test_that("furrr::future_map on plan(hako_multisession, packages = )", {
  repo <- wasm_repo()
  skip_if_not_installed("future")
  skip_if_not_installed("furrr")
  old <- future::plan()
  on.exit({ future::plan(old); reset_all() })
  # furrr's futures run furrr's and purrr's code in the sandbox
  future::plan(hako::hako_multisession, workers = 2, packages = "furrr", repos = repo)
  expect_equal(furrr::future_map(1:4, sqrt), as.list(sqrt(1:4)))
  expect_equal(furrr::future_map_dbl(1:6, ~ .x * 2), (1:6) * 2)
  a <- furrr::future_map_dbl(1:3, ~ runif(1), .options = furrr::furrr_options(seed = 1))
  b <- furrr::future_map_dbl(1:3, ~ runif(1), .options = furrr::furrr_options(seed = 1))
  expect_identical(a, b)
  # the sandbox's furrr is the store's when the repository has it, else this
  # library's (R-only) on the store's purrr and future
  where <- future::value(future::future(find.package(c("furrr", "purrr", "future"))))
  furrr_from <- if ("furrr" %in% hako:::repo_packages(repo)) "^/hako/library/" else "^/library/"
  expect_match(where[[1]], furrr_from)
  expect_match(where[[2]], "^/hako/library/")
})

test_that("nested futures with future in the sandbox's set", {
  repo <- wasm_repo()
  skip_if_not_installed("future")
  old <- future::plan()
  on.exit({ future::plan(old); reset_all() })
  future::plan(hako::hako_multisession, workers = 2, packages = "future", repos = repo)
  f <- future::future({
    inner <- future::future(6 * 7)
    list(value = future::value(inner), sequential = inherits(future::plan(), "sequential"))
  })
  v <- future::value(f)
  expect_equal(v$value, 42)
  # inside the sandbox the nested level is sequential, as future's default
  expect_true(v$sequential)
  library(future)
  x %<-% {
    y %<-% 20
    y + 1
  }
  expect_equal(x, 21)
})

test_that("plan(hako_multisession) without packages: a future needing one says how to add it", {
  skip_if_not_installed("future")
  old <- future::plan()
  on.exit({ future::plan(old); reset_all() })
  future::plan(hako::hako_multisession, workers = 1)
  err <- tryCatch(future::value(future::future(library(purrr))), error = identity)
  expect_match(conditionMessage(err), "plan\\(hako::hako_multisession, packages = c\\(\"purrr\"\\)\\)")
  expect_match(conditionMessage(err), "hako pkg install purrr --repo URL")
})

if (is.na(old_store)) Sys.unsetenv("HAKO_PACKAGES") else Sys.setenv(HAKO_PACKAGES = old_store)
