test_that("make_cluster() works with parallel's functions", {
  on.exit(reset_all())
  cl <- make_cluster(2)
  expect_s3_class(cl, "cluster")
  expect_output(print(cl), "2 sandboxed")
  k <- 10
  parallel::clusterExport(cl, "k", envir = environment())
  expect_equal(parallel::clusterEvalQ(cl, k), list(10, 10))
  expect_equal(parallel::parLapply(cl, 1:4, function(i) i * k), as.list((1:4) * 10))
  expect_equal(parallel::parSapply(cl, 1:6, sqrt), sqrt(1:6))
  expect_equal(unlist(parallel::clusterApplyLB(cl, 1:5, function(i) i + k)), 11:15)
  expect_error(parallel::clusterEvalQ(cl, stop("bad")), "bad")
  parallel::stopCluster(cl)
  expect_length(grep("^\\.cluster", ls(hako:::.hako$profiles)), 0)
})

test_that("foreach's %dopar% runs on a hako cluster through doParallel", {
  skip_if_not_installed("foreach")
  skip_if_not_installed("doParallel")
  on.exit(reset_all())
  cl <- make_cluster(2, packages = "doParallel")
  on.exit(foreach::registerDoSEQ(), add = TRUE)
  doParallel::registerDoParallel(cl)
  # as from a user's session: foreach ships the calling environment, and a
  # test's would bring the hako namespace along
  user <- new.env(parent = globalenv())
  r <- evalq({
    `%dopar%` <- foreach::`%dopar%`
    k <- 10
    list(foreach::foreach(i = 1:4, .combine = c) %dopar% (sqrt(i) + k),
         # the iterations run in the sandbox
         foreach::foreach(i = 1:2, .combine = c) %dopar% file.exists("/etc/passwd"))
  }, user)
  expect_equal(r[[1]], sqrt(1:4) + 10)
  expect_equal(r[[2]], c(FALSE, FALSE))
  parallel::stopCluster(cl)
})

test_that("daemons(packages =) mounts R-only packages read-only and refuses compiled ones", {
  on.exit(reset_all())
  expect_error(daemons(1, packages = "nosuchpkg"), "not installed")
  expect_error(daemons(1, packages = "testthat"), "compiled code.*testthat")
  if (requireNamespace("furrr", quietly = TRUE)) {
    # an empty package store: furrr's purrr is then found nowhere
    hako:::with_envvars(c(HAKO_PACKAGES = tempfile("empty-store-")),
                       expect_error(daemons(1, packages = "furrr"), "compiled code.*purrr"))
  }
  expect_error(daemons(1, packages = 1), "character")
  skip_if_not_installed("foreach")
  daemons(1, packages = "foreach")
  # foreach and what it imports (iterators, codetools), nothing else
  expect_true(hako(requireNamespace("foreach", quietly = TRUE))[])
  expect_true(hako("iterators" %in% loadedNamespaces() || requireNamespace("iterators", quietly = TRUE))[])
  expect_setequal(hako(list.files("/library"))[], c("codetools", "foreach", "iterators"))
  expect_equal(hako(foreach::foreach(i = 1:3, .combine = c) %do% i^2, `%do%` = foreach::`%do%`)[], c(1, 4, 9))
  e <- suppressWarnings(hako(writeLines("x", "/library/foreach/x"))[])
  expect_true(is_hako_error(e))
  expect_false(file.exists(file.path(find.package("foreach"), "x")))
})

test_that("as.promise() on a hako", {
  skip_if_not_installed("promises")
  skip_if_not_installed("later")
  on.exit(reset_all())
  daemons(1)
  got <- NULL
  promises::then(promises::as.promise(hako(20 + 1)), function(v) got <<- v)
  err <- NULL
  promises::catch(promises::as.promise(hako(stop("nope"))), function(e) err <<- conditionMessage(e))
  for (i in 1:200) { later::run_now(0.02); if (!is.null(got) && !is.null(err)) break }
  expect_equal(got, 21)
  expect_equal(err, "nope")
})
