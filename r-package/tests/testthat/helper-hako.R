# Tests run against the real hako binary (HAKO_BINARY, option hako.binary or
# PATH) and real sandboxed daemons: no mocks. A missing binary is an error.
hako_binary()

reset_all <- function() {
  for (p in ls(hako:::.hako$profiles)) daemons(0, .compute = p)
}
