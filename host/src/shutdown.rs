//! Waiting for the signals that ask a host or daemon to stop.

/// Resolves at SIGINT or SIGTERM, naming it.
pub async fn signal() -> String {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // No signal handling: only the other ways of stopping remain.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT".into(),
        _ = term.recv() => "SIGTERM".into(),
    }
}
