# What a RESULT's status and payload become in this session.

# The RESULT statuses, named once (host/PROTOCOL.md's RESULT table is the
# reference; the host names the same codes in Rust). A status with neither
# an errorValue nor a class carries a serialized value (or hakoError); one
# with an errorValue becomes that integer code; the others a 'hakoError' of
# that class. Cancelled is errorValue 20 and also a 'hakoInterrupt'.
RESULT_STATUS <- data.frame(
  code = 0:11,
  name = c("value", "error", "timeout", "cancelled", "connection reset", "memory", "output",
           "crashed", "shutdown", "rejected", "refused", "disagreed"),
  error_value = c(NA, NA, 5L, 20L, 19L, NA, NA, NA, 19L, NA, NA, NA),
  class = c(NA, NA, NA, "hakoInterrupt", NA, "hakoMemoryLimit", "hakoOutputLimit", "hakoCrashed", NA,
            # refused: the host's result verifier refused what the sandbox sent, never read
            "hakoRejected", "hakoRefused",
            # disagreed: a task's replicas gave no result k times (.replicas)
            "hakoDisagreed"),
  stringsAsFactors = FALSE
)

decode_value <- function(status, payload) {
  if (status == 0L) return(tryCatch(unserialize(payload), error = unserialize_failed))
  row <- match(status, RESULT_STATUS$code)
  if (is.na(row)) {
    return(mk_hako_error(sprintf("unknown result status %d: %s", status, raw_text(payload)), "hakoProtocolError"))
  }
  ev <- RESULT_STATUS$error_value[[row]]
  cls <- RESULT_STATUS$class[[row]]
  if (is.na(ev) && is.na(cls)) {
    return(tryCatch(unserialize(payload), error = unserialize_failed))
  }
  msg <- raw_text(payload)
  if (identical(cls, "hakoInterrupt")) return(mk_interrupt(msg))
  if (!is.na(ev)) return(mk_error_value(ev, msg))
  mk_hako_error(msg, cls)
}

unserialize_failed <- function(e) {
  mk_hako_error(paste("the result could not be unserialized in this session:", conditionMessage(e)), "hakoUnserializeError")
}
