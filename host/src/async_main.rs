//! The entry point shared by the network subcommands that run on a small
//! tokio runtime: set up logging, run, map errors to exit status 2.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

/// Run `main` on a one-worker multi-threaded runtime.
pub fn run(main: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    crate::logging::init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hako: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(async {
        match main.await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("hako: {e:#}");
                ExitCode::from(2)
            }
        }
    });
    rt.shutdown_timeout(Duration::from_millis(200));
    code
}
