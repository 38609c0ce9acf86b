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
