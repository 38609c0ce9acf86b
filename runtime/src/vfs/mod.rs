//! The guest's filesystem (placeholder: being written).
pub struct Vfs;
