# The R half of `hako pkg build` for one package, inside the sandbox with
# R.wasm's own R 4.6: R code, lazy-load database, byte code, Meta, help
# indices. The caller defines hako_name, hako_src and hako_lib; the packages
# the build needs are the sandbox's package set (first in .libPaths()).
# R CMD INSTALL runs some steps in a child R; the sandbox has no processes,
# so those run here, in this R.
local({
  env <- new.env(parent = asNamespace("tools"))
  env$R_runR <- function(cmd = NULL, Ropts = "", env = "", stdout = TRUE,
                         stderr = TRUE, stdin = NULL, arch = "", timeout = 0, ...) {
    tryCatch(
      utils::capture.output(eval(parse(text = cmd), envir = new.env(parent = globalenv()))),
      error = function(e) structure(conditionMessage(e), status = 1L)
    )
  }
  install <- tools:::.install_packages
  environment(install) <- env
  .libPaths(c(hako_lib, .libPaths()))
  Sys.setenv(R_INSTALL_STAGED = "false", R_LIBS = paste(.libPaths(), collapse = ":"))
  ok <- tryCatch({
    install(c("--no-libs", "--no-test-load", "--no-multiarch", "--no-staged-install",
              "--no-configure", "--no-html", "-l", hako_lib, hako_src), no.q = TRUE)
    TRUE
  }, error = function(e) {
    message("hako-build: ", conditionMessage(e))
    FALSE
  })
  built <- file.path(hako_lib, hako_name, "DESCRIPTION")
  if (ok && file.exists(built) && !is.na(read.dcf(built, "Built")[1, 1])) {
    cat("hako-build: R half done\n")
  }
})
