//! Emscripten's host ABI for R.wasm and its side modules, grouped by interface
//! the way wasmtime's WASI host crates group theirs.

pub mod errno;
pub mod fs;
pub mod mem;
