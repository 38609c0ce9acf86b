//! Standard input and output for the client link. When they are pipes (the
//! usual case: an R session's child) they are driven by the reactor, not by
//! tokio's blocking-thread `stdin()`/`stdout()`, which cost a thread hop per
//! read and per flush.

use std::os::fd::{AsFd, OwnedFd};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;

fn dup(fd: std::os::fd::BorrowedFd<'_>) -> Option<OwnedFd> {
    fd.try_clone_to_owned().ok()
}

pub fn stdin() -> Box<dyn AsyncRead + Unpin + Send> {
    match dup(std::io::stdin().as_fd()).map(pipe::Receiver::from_owned_fd) {
        Some(Ok(r)) => Box::new(r),
        _ => Box::new(tokio::io::stdin()),
    }
}

pub fn stdout() -> Box<dyn AsyncWrite + Unpin + Send> {
    match dup(std::io::stdout().as_fd()).map(pipe::Sender::from_owned_fd) {
        Some(Ok(w)) => Box::new(w),
        _ => Box::new(tokio::io::stdout()),
    }
}
