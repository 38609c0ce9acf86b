# Text from a sandbox shown in this session: a task (or an untrusted
# daemon) must not drive the user's terminal. Control characters would let
# it set the window title, clear the screen, move the cursor over earlier
# output, or write the clipboard (OSC 52), so they are rendered visibly.

# Bytes that are terminal controls: C0 except tab and newline, DEL, and the
# C1 controls as UTF-8 encodes them (U+0080-U+009F; CSI is U+009B).
CONTROL_RE <- "[\\x01-\\x08\\x0b-\\x1f\\x7f]|\\xc2[\\x80-\\x9f]"

#' Render terminal control characters visibly
#'
#' What the package shows from a task (relayed output, messages, warnings,
#' error messages) passes through here: ESC becomes `^[`, other C0 controls
#' `^A`..`^_` (carriage return `^M` unless it ends a line, backspace `^H`),
#' DEL `^?`, C1 controls `<U+009B>` and bytes that are not UTF-8 `<9b>`;
#' tab and newline stay.
#' @param x A character vector.
#' @return `x` with its control characters rendered visibly.
#' @noRd
safe_text <- function(x) {
  if (!is.character(x) || !length(x)) return(x)
  hit <- which(grepl(CONTROL_RE, x, perl = TRUE, useBytes = TRUE) | !validUTF8(x))
  for (i in hit) x[[i]] <- safe_string(x[[i]])
  x
}

# One string with controls: each control present is replaced in one pass
# over bytes (the string may be invalid UTF-8, and a control byte never
# occurs inside a multibyte character).
safe_string <- function(s) {
  if (is.na(s)) return(s)
  # R reads latin1 as CP1252, which has no C1 controls
  if (Encoding(s) == "latin1") s <- enc2utf8(s)
  if (!validUTF8(s)) {
    # bytes that are not UTF-8 (a lone 0x9B is CSI to some terminals): <9b>
    Encoding(s) <- "unknown"
    s <- iconv(s, "UTF-8", "UTF-8", sub = "byte")
    Encoding(s) <- "UTF-8"
  }
  enc <- Encoding(s)
  for (k in C0_CODES) {
    ch <- rawToChar(as.raw(k))
    if (!grepl(ch, s, fixed = TRUE, useBytes = TRUE)) next
    if (k == 13L) {
      # a carriage return ending a line (CRLF) moves nothing: kept
      s <- gsub("\r(?!\n)", "^M", s, perl = TRUE, useBytes = TRUE)
      next
    }
    to <- if (k == 127L) "^?" else paste0("^", rawToChar(as.raw(k + 64L)))
    s <- gsub(ch, to, s, fixed = TRUE, useBytes = TRUE)
  }
  if (grepl(rawToChar(as.raw(0xC2L)), s, fixed = TRUE, useBytes = TRUE)) {
    for (k in 0x80:0x9F) {
      ch <- rawToChar(as.raw(c(0xC2L, k)))
      if (grepl(ch, s, fixed = TRUE, useBytes = TRUE)) s <- gsub(ch, sprintf("<U+%04X>", k), s, fixed = TRUE, useBytes = TRUE)
    }
  }
  Encoding(s) <- enc
  s
}

C0_CODES <- c(1:8, 11:31, 127L)

# A condition's message (and a FutureResult's) made safe to show.
safe_condition <- function(cond) {
  if (is.list(cond) && is.character(cond$message)) cond$message <- safe_text(cond$message)
  cond
}
