# A host's named users (`hako user`, the host's `identity` directory): a
# friend joins with the one line `hako user` prints, and learns why when
# the host's owner revokes their token mid-session.

test_that("a named user joins with the printed line and is told when revoked", {
  on.exit(reset_all())
  id <- tempfile("identity-")
  bin <- hako_binary()
  user <- function(...) system2(bin, c("user", ..., "--identity", id), stdout = TRUE, stderr = TRUE)
  user("add", "ann")
  daemons(1, url = host_url(host = "127.0.0.1"), identity = id, .compute = "owner")
  line <- trimws(grep("hako::daemons(", user("show", "ann"), fixed = TRUE, value = TRUE))
  expect_length(line, 1L)
  eval(parse(text = sub(")$", ", .compute = \"ann\")", line)))
  expect_equal(hako(1 + 1, .compute = "ann")[], 2)
  m <- hako({ Sys.sleep(30); 1 }, .compute = "ann")
  user("revoke", "ann")
  v <- m[]
  expect_true(is_error_value(v))
  expect_match(attr(v, "message"), "this token was revoked by the host", fixed = TRUE)
  expect_error(hako(1, .compute = "ann"), "this token was revoked by the host", fixed = TRUE)
  # the owner's own session is not touched
  expect_equal(hako(2 + 2, .compute = "owner")[], 4)
})
