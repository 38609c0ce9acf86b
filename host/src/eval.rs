//! `hako eval`: one evaluation in a fresh sandbox, printed as R prints it.
//!
//! Exit status: 0 success, 1 R error, 2 usage error, 3 a limit was hit.

use crate::sandbox_args::SandboxArgs;
use crate::{paths, progress};
use anyhow::{bail, Context};
use clap::Args;
use hako_runtime::{SandboxError, Stream};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct EvalArgs {
    /// R code to evaluate; `-` reads it from standard input.
    #[arg(conflicts_with = "file", required_unless_present = "file")]
    expr: Option<String>,
    /// Evaluate the R code in FILE.
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// Stop the evaluation after SECONDS.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Compiled packages the sandbox may load, comma-separated or repeated:
    /// names installed with `hako pkg install` (their dependencies come
    /// too) or installed package directories (a path with a `/`). Mounted
    /// read-only at /hako/library after every file is checked.
    #[arg(long, value_name = "NAME|DIR,...", value_delimiter = ',')]
    packages: Vec<String>,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

pub fn run(args: EvalArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hako: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_inner(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let code = match (&args.expr, &args.file) {
        (Some(e), None) if e == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading standard input")?;
            s
        }
        (Some(e), None) => e.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        _ => bail!("give R code, `-f FILE` or `-`"),
    };
    let timeout = args
        .timeout
        .map(|t| crate::sandbox_args::seconds(t, "--timeout"))
        .transpose()?;
    let mut config = args.sandbox.config(timeout)?;
    config.packages = std::sync::Arc::new(crate::sandbox_args::package_set(&args.packages)?);
    let runtime = progress::open_runtime(&paths::assets_dir(args.sandbox.assets.as_deref()))?;
    let mut sandbox = runtime.sandbox(config)?;
    let result = sandbox.eval(&code);
    let (status, output, note) = match result {
        Ok(r) => (if r.ok { 0 } else { 1 }, r.output, None),
        Err(SandboxError::Limit { limit, output }) => {
            let what = match (limit, timeout) {
                (hako_runtime::Limit::Time, Some(t)) => {
                    format!("time limit reached ({} s)", t.as_secs_f64())
                }
                (hako_runtime::Limit::Memory, _) => {
                    format!("memory limit reached ({} MiB)", args.sandbox.memory)
                }
                (hako_runtime::Limit::Output, _) => {
                    format!("output limit reached ({} MiB)", args.sandbox.max_output)
                }
                (l, _) => l.to_string(),
            };
            (3, output, Some(what))
        }
        Err(SandboxError::Crashed { message, output }) => (1, output, Some(message)),
        Err(SandboxError::Host(e)) => return Err(e),
    };
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let (out_tty, err_tty) = (out.is_terminal(), err.is_terminal());
    for chunk in output {
        let _ = match chunk.stream {
            Stream::Stdout => out.write_all(&terminal::shown(&chunk.bytes, out_tty)),
            _ => {
                let _ = out.flush();
                err.write_all(&terminal::shown(&chunk.bytes, err_tty))
            }
        };
    }
    let _ = out.flush();
    if let Some(note) = note {
        let _ = writeln!(err, "hako: {note}");
    }
    Ok(ExitCode::from(status))
}

/// What the sandbox printed, made safe for a terminal.
///
/// A task's output could retitle the window, clear the screen, move the
/// cursor over earlier lines or write the clipboard (OSC 52) through escape
/// sequences. On a terminal every control character except newline and tab
/// (and carriage return right before a newline) is shown visibly instead:
/// C0 controls and DEL in caret notation (`^[`, `^?`), C1 controls as
/// `<U+009B>`, bytes that are not UTF-8 as `\xNN`. Not on a terminal, the
/// bytes pass unchanged, so pipes and files get exactly what R wrote.
mod terminal {
    use std::borrow::Cow;

    pub fn shown(bytes: &[u8], tty: bool) -> Cow<'_, [u8]> {
        if !tty || !bytes.iter().any(|&b| needs_escape_byte(b)) {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len() + 16);
        for chunk in bytes.utf8_chunks() {
            let valid = chunk.valid();
            let mut chars = valid.char_indices().peekable();
            while let Some((_, c)) = chars.next() {
                match c {
                    '\n' | '\t' => out.push(c as u8),
                    '\r' if chars.peek().is_some_and(|(_, n)| *n == '\n') => out.push(b'\r'),
                    '\0'..='\x1f' => out.extend_from_slice(&[b'^', c as u8 + 0x40]),
                    '\x7f' => out.extend_from_slice(b"^?"),
                    '\u{80}'..='\u{9f}' => {
                        out.extend_from_slice(format!("<U+{:04X}>", c as u32).as_bytes())
                    }
                    _ => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            for b in chunk.invalid() {
                out.extend_from_slice(format!("\\x{b:02X}").as_bytes());
            }
        }
        Cow::Owned(out)
    }

    /// Whether a byte may start something to escape (C0, DEL, or any
    /// non-ASCII byte, which may be a C1 control or not UTF-8).
    fn needs_escape_byte(b: u8) -> bool {
        (b < 0x20 && b != b'\n' && b != b'\t') || b >= 0x7f
    }

    #[cfg(test)]
    mod tests {
        use super::shown;

        #[test]
        fn controls_are_visible_on_a_terminal_and_untouched_elsewhere() {
            let evil =
                "title\x1b]0;pwned\x07 clear\x1b[2J clip\x1b]52;c;ZXZpbA==\x07 \u{9b}31m\r\n";
            let shown_tty = shown(evil.as_bytes(), true);
            assert_eq!(
                String::from_utf8(shown_tty.into_owned()).unwrap(),
                "title^[]0;pwned^G clear^[[2J clip^[]52;c;ZXZpbA==^G <U+009B>31m\r\n"
            );
            assert_eq!(&*shown(evil.as_bytes(), false), evil.as_bytes());
            // Ordinary text, UTF-8 and tabs pass as they are.
            let fine = "a\tb \u{e9}t\u{e9} \u{1F600}\n";
            assert_eq!(&*shown(fine.as_bytes(), true), fine.as_bytes());
            // A lone carriage return, DEL, and bytes that are not UTF-8.
            assert_eq!(&*shown(b"a\rb\x7f\xff\x9b", true), b"a^Mb^?\\xFF\\x9B");
        }
    }
}
