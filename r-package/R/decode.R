# What a RESULT's status and payload become in this session.

decode_value <- function(status, payload) {
  switch(as.character(status),
    "0" = ,
    "1" = tryCatch(unserialize(payload), error = function(e) {
      mk_hako_error(paste("the result could not be unserialized in this session:", conditionMessage(e)), "hakoUnserializeError")
    }),
    "2" = mk_error_value(5L, raw_text(payload)),
    "3" = mk_interrupt(raw_text(payload)),
    "4" = mk_error_value(19L, raw_text(payload)),
    "5" = mk_hako_error(raw_text(payload), "hakoMemoryLimit"),
    "6" = mk_hako_error(raw_text(payload), "hakoOutputLimit"),
    "7" = mk_hako_error(raw_text(payload), "hakoCrashed"),
    "8" = mk_error_value(19L, raw_text(payload)),
    "9" = mk_hako_error(raw_text(payload), "hakoRejected"),
    # the host's result verifier refused what the sandbox sent: never read
    "10" = mk_hako_error(raw_text(payload), "hakoRefused"),
    mk_hako_error(sprintf("unknown result status %d: %s", status, raw_text(payload)), "hakoProtocolError")
  )
}

