//! Progress of the runtime's slow, once-per-machine steps (compiling R.wasm
//! to machine code takes tens of seconds on a small machine), reported to
//! whoever runs the runtime: `hako eval` shows them on its terminal, a host
//! writes them to its log for the R session to show. Without a hook nothing
//! is reported.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// One report: a step begins, or it ended after the given time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event<'a> {
    Begin(&'a str),
    End(&'a str, Duration),
}

type Hook = Arc<dyn Fn(Event<'_>) + Send + Sync>;

static HOOK: RwLock<Option<Hook>> = RwLock::new(None);

/// Sends the process's progress reports to `hook` (`None`: nowhere).
pub fn set_hook(hook: Option<Hook>) {
    if let Ok(mut h) = HOOK.write() {
        *h = hook;
    }
}

fn emit(ev: Event<'_>) {
    // Cloned out of the lock: a hook may itself set the hook.
    let hook = HOOK.read().ok().and_then(|h| h.clone());
    if let Some(h) = hook {
        h(ev);
    }
}

/// Runs `f` as the step `what`, reported when it begins and when it ends.
pub fn step<T>(what: &str, f: impl FnOnce() -> T) -> T {
    emit(Event::Begin(what));
    let started = Instant::now();
    let out = f();
    emit(Event::End(what, started.elapsed()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_step_is_reported_to_the_hook_when_it_begins_and_ends() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        set_hook(Some(Arc::new(move |ev: Event<'_>| {
            let line = match ev {
                Event::Begin(w) => format!("begin {w}"),
                Event::End(w, _) => format!("end {w}"),
            };
            s.lock().unwrap().push(line);
        })));
        assert_eq!(step("compiling", || 7), 7);
        set_hook(None);
        step("unseen", || ());
        assert_eq!(*seen.lock().unwrap(), ["begin compiling", "end compiling"]);
    }
}
