#' Adds two doubles in C.
add <- function(a, b) .Call(C_hakotest_add, as.double(a), as.double(b))

#' Throws a C++ exception and catches it in the same module: returns its
#' message.
cpp_catch <- function(what) .Call(C_hakotest_cpp_catch, as.character(what))

#' Throws through `n` C++ frames holding objects with destructors, catches it
#' and returns how many destructors ran (should be `n`).
cpp_unwind <- function(n) .Call(C_hakotest_cpp_unwind, as.integer(n))

#' Raises an R error from C (Rf_error longjmps out of the module).
c_error <- function(msg) .Call(C_hakotest_c_error, as.character(msg))

#' setjmp/longjmp inside the module: longjmps back from `depth` frames
#' down and returns `depth`.
c_setjmp <- function(depth) .Call(C_hakotest_c_setjmp, as.integer(depth))

#' Tries fopen(path, "r") in C: the first line if it opened, else NULL with
#' the errno text as attribute "error".
open_file <- function(path) .Call(C_hakotest_open_file, as.character(path))
