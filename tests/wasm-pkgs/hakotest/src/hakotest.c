#include <R.h>
#include <Rinternals.h>
#include <R_ext/Rdynload.h>
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

SEXP hakotest_cpp_catch(SEXP what);
SEXP hakotest_cpp_unwind(SEXP n);

static SEXP hakotest_add(SEXP a, SEXP b) {
  return Rf_ScalarReal(Rf_asReal(a) + Rf_asReal(b));
}

static SEXP hakotest_c_error(SEXP msg) {
  Rf_error("hakotest: %s", CHAR(STRING_ELT(msg, 0)));
  return R_NilValue; /* not reached */
}

static jmp_buf hakotest_jmp;

static void descend(int depth, int at) {
  if (depth == 0) longjmp(hakotest_jmp, at);
  descend(depth - 1, at);
}

static SEXP hakotest_c_setjmp(SEXP depth) {
  int d = Rf_asInteger(depth);
  volatile int got = setjmp(hakotest_jmp);
  if (got == 0) {
    descend(d, d + 1); /* longjmp with d + 1: 0 would mean "no jump" */
    return Rf_ScalarInteger(-1);
  }
  return Rf_ScalarInteger(got - 1);
}

static SEXP hakotest_open_file(SEXP path) {
  errno = 0;
  FILE *f = fopen(CHAR(STRING_ELT(path, 0)), "r");
  if (f == NULL) {
    SEXP out = PROTECT(Rf_allocVector(STRSXP, 0));
    Rf_setAttrib(out, Rf_install("error"), Rf_mkString(strerror(errno)));
    UNPROTECT(1);
    return out;
  }
  char line[256] = {0};
  if (fgets(line, sizeof line, f) == NULL) line[0] = 0;
  fclose(f);
  line[strcspn(line, "\n")] = 0;
  return Rf_mkString(line);
}

static const R_CallMethodDef calls[] = {
  {"hakotest_add", (DL_FUNC) &hakotest_add, 2},
  {"hakotest_cpp_catch", (DL_FUNC) &hakotest_cpp_catch, 1},
  {"hakotest_cpp_unwind", (DL_FUNC) &hakotest_cpp_unwind, 1},
  {"hakotest_c_error", (DL_FUNC) &hakotest_c_error, 1},
  {"hakotest_c_setjmp", (DL_FUNC) &hakotest_c_setjmp, 1},
  {"hakotest_open_file", (DL_FUNC) &hakotest_open_file, 1},
  {NULL, NULL, 0}
};

void R_init_hakotest(DllInfo *dll) {
  R_registerRoutines(dll, NULL, calls, NULL, NULL);
  R_useDynamicSymbols(dll, FALSE);
}
