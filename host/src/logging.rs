//! Logs go to stderr (stdout may be the client link), filtered by
//! `$HAKO_LOG` (e.g. `debug`, `hako=debug,rustls=info`); default
//! `warn,hako=info`.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

pub fn init() {
    let spec = std::env::var("HAKO_LOG").unwrap_or_else(|_| "warn,hako=info".into());
    let filter: Targets = spec.parse().unwrap_or_else(|_| {
        eprintln!("hako: ignoring HAKO_LOG={spec:?}: not a filter");
        "warn,hako=info".parse().unwrap_or_default()
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(filter)
        .try_init();
}
