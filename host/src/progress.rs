//! What a first start shows while it works: fetching webR's assets,
//! compiling R.wasm and saving R's start-up state take one to two minutes
//! once per machine, and a command that says nothing for that long looks
//! hung. Reports go to standard error: on a terminal as one status line
//! that counts the seconds; otherwise (a log an R session reads) one
//! `hako: [start-up] …` line per step, marked so that a reader can tell them
//! from the error that may follow. A start with everything cached shows
//! nothing.

use crate::paths;
use hako_assets::Assets;
use hako_runtime::progress::{self, Event};
use hako_runtime::Runtime;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Starts each step's line in a log (not on a terminal): the R package
/// shows these lines as the steps of a first start.
const MARKER: &str = "[start-up] ";

/// How long the runtime may take before its start is reported at all:
/// from its cache it takes well under a second.
const QUIET: Duration = Duration::from_secs(2);

/// Opens the webR assets in `assets_dir` (fetching them first if they are
/// not there) and the runtime, reporting the slow steps of a first start.
pub fn open_runtime(assets_dir: &Path) -> anyhow::Result<Runtime> {
    let r = Reporter::start(std::io::stderr().is_terminal());
    let hook = r.clone();
    progress::set_hook(Some(Arc::new(move |ev: Event<'_>| match ev {
        Event::Begin(what) => hook.show(what),
        Event::End(what, took) => hook.show_done(what, took),
    })));
    let opened = (|| {
        let assets = match Assets::open(assets_dir) {
            Ok(a) => a,
            Err(_) => {
                r.show(&format!(
                    "first start: preparing webR's R in {} (once, a minute or two)",
                    assets_dir.display()
                ));
                Assets::fetch(assets_dir, &mut |m| r.show(m))?
            }
        };
        r.wait("starting R (a first start also saves its start-up state, once)");
        Ok(Runtime::new(&assets, &paths::cache_dir())?)
    })();
    progress::set_hook(None);
    r.finish(opened.is_ok());
    opened
}

/// The status shown on standard error.
#[derive(Clone)]
struct Reporter {
    inner: Arc<Mutex<State>>,
}

struct State {
    tty: bool,
    started: Instant,
    /// Something was shown: the end is reported too.
    shown: bool,
    /// The step on the status line and when it began (terminal only).
    line: Option<(String, Instant)>,
    /// What goes on between reported steps, shown only once it has lasted
    /// [`QUIET`]: (what, since, shown yet).
    base: Option<(String, Instant, bool)>,
    /// A reported step is under way (the base is not shown meanwhile).
    in_step: bool,
    done: bool,
}

impl Reporter {
    fn start(tty: bool) -> Reporter {
        let r = Reporter {
            inner: Arc::new(Mutex::new(State {
                tty,
                started: Instant::now(),
                shown: false,
                line: None,
                base: None,
                in_step: false,
                done: false,
            })),
        };
        // The ticker: counts the seconds on a terminal, and shows a waiting
        // step once it has lasted. It ends with the reporter.
        let t = r.clone();
        let _ = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(500));
                let Ok(mut s) = t.inner.lock() else { return };
                if s.done {
                    return;
                }
                s.tick();
            });
        r
    }

    /// A new step: `what` replaces what was shown.
    fn show(&self, what: &str) {
        if let Ok(mut s) = self.inner.lock() {
            s.in_step = true;
            s.begin(what);
        }
    }

    /// The step `what` ended; the base, if any, counts afresh.
    fn show_done(&self, what: &str, took: Duration) {
        if let Ok(mut s) = self.inner.lock() {
            if s.line.take().is_some() {
                // The step's own status line gives way to its outcome.
                let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
            }
            s.print_line(&format!("{what}: done in {:.1} s", took.as_secs_f64()));
            s.in_step = false;
            if let Some(b) = s.base.as_mut() {
                *b = (b.0.clone(), Instant::now(), false);
            }
        }
    }

    /// What goes on from now on: shown only if it lasts longer than
    /// [`QUIET`] with no step reported meanwhile.
    fn wait(&self, what: &str) {
        if let Ok(mut s) = self.inner.lock() {
            s.end_line();
            s.in_step = false;
            s.base = Some((what.to_string(), Instant::now(), false));
        }
    }

    fn finish(&self, ok: bool) {
        let Ok(mut s) = self.inner.lock() else { return };
        s.end_line();
        if s.shown && ok {
            let took = s.started.elapsed().as_secs_f64();
            s.print_line(&format!(
                "R is ready after {took:.0} s (later starts reuse what this one prepared)"
            ));
        }
        s.done = true;
    }
}

impl State {
    fn begin(&mut self, what: &str) {
        self.end_line();
        if self.tty {
            self.line = Some((what.to_string(), Instant::now()));
            self.draw();
        } else {
            self.print_line(what);
        }
        self.shown = true;
    }

    fn tick(&mut self) {
        if let Some((what, since, false)) = self.base.clone() {
            if !self.in_step && since.elapsed() >= QUIET {
                self.begin(&what);
                self.base = Some((what, since, true));
                // Count from when it began, not from when it was shown.
                if let Some(l) = self.line.as_mut() {
                    l.1 = since;
                }
            }
        }
        if self.line.is_some() {
            self.draw();
        }
    }

    /// The status line, redrawn in place: `hako: what … 12 s`.
    fn draw(&self) {
        if let Some((what, since)) = &self.line {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[Khako: {what} … {} s", since.elapsed().as_secs());
            let _ = e.flush();
        }
    }

    /// Ends the status line (with its final time) so the next output starts
    /// on a line of its own.
    fn end_line(&mut self) {
        if let Some((what, since)) = self.line.take() {
            let took = since.elapsed().as_secs_f64();
            let mut e = std::io::stderr().lock();
            let _ = if took >= 1.0 {
                writeln!(e, "\r\x1b[Khako: {what}: done in {took:.1} s")
            } else {
                writeln!(e, "\r\x1b[Khako: {what}")
            };
        }
    }

    fn print_line(&mut self, text: &str) {
        let marker = if self.tty { "" } else { MARKER };
        let _ = writeln!(std::io::stderr().lock(), "hako: {marker}{text}");
        self.shown = true;
    }
}
