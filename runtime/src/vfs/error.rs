//! Why a filesystem could not be built from its configuration. Its own file
//! so the namespace, which finds most of these, need not import the module
//! that uses the namespace.

#[derive(Debug, thiserror::Error)]
pub enum VfsError {
    #[error("mount at {guest}: {reason}")]
    Mount { guest: String, reason: String },
    #[error("home directory {home}: {reason}")]
    Home { home: String, reason: String },
    #[error("max_fds must be at least 3, got {0}")]
    MaxFds(usize),
}
