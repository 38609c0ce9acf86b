#include <stdexcept>
#include <string>
#include <Rinternals.h>

namespace {
int destroyed = 0;

struct Counted {
  ~Counted() { ++destroyed; }
};

void dive(int n) {
  Counted c;
  if (n <= 1) throw std::runtime_error("bottom");
  dive(n - 1);
}
}  // namespace

extern "C" SEXP hakotest_cpp_catch(SEXP what) {
  std::string msg;
  try {
    throw std::runtime_error(std::string("caught: ") + CHAR(STRING_ELT(what, 0)));
  } catch (const std::exception &e) {
    msg = e.what();
  }
  return Rf_mkString(msg.c_str());
}

extern "C" SEXP hakotest_cpp_unwind(SEXP n) {
  destroyed = 0;
  try {
    dive(Rf_asInteger(n));
  } catch (const std::runtime_error &) {
  }
  return Rf_ScalarInteger(destroyed);
}
