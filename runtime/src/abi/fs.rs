//! File syscalls (placeholder: being written).
