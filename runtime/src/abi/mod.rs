//! Emscripten's host ABI for R.wasm and its side modules, grouped by interface
//! the way wasmtime's WASI host crates group theirs.

pub mod blas;
pub mod dl;
pub mod events;
pub mod fs;
pub mod mem;
pub mod net;
pub mod proc;
pub mod time;

use crate::store::StoreData;
use wasmtime::Linker;

/// Define every import R.wasm and its side modules may need.
pub fn add_to_linker(l: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    fs::add_to_linker(l)?;
    proc::add_to_linker(l)?;
    time::add_to_linker(l)?;
    net::add_to_linker(l)?;
    events::add_to_linker(l)?;
    dl::add_to_linker(l)?;
    blas::add_to_linker(l)?;
    Ok(())
}
