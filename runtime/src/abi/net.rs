//! Networking imports. The sandbox has no network: every socket call fails
//! with an errno R turns into an error, and name lookups find nothing.

use crate::errno::{EAFNOSUPPORT, ENOSYS};
use crate::store::StoreData;
use wasmtime::Linker;
use wasmtime::Result;

pub fn add_to_linker(l: &mut Linker<StoreData>) -> Result<()> {
    l.func_wrap(
        "env",
        "__syscall_socket",
        |_: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> i32 { EAFNOSUPPORT.negated() },
    )?;
    for name in [
        "__syscall_accept4",
        "__syscall_bind",
        "__syscall_connect",
        "__syscall_getpeername",
        "__syscall_getsockname",
        "__syscall_getsockopt",
        "__syscall_listen",
        "__syscall_recvfrom",
        "__syscall_recvmsg",
        "__syscall_sendmsg",
        "__syscall_sendto",
    ] {
        l.func_wrap(
            "env",
            name,
            |_: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> i32 { ENOSYS.negated() },
        )?;
    }
    // EAI_FAIL: no resolver.
    l.func_wrap(
        "env",
        "getnameinfo",
        |_: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: i32| -> i32 { -4 },
    )?;
    l.func_wrap("env", "_emscripten_lookup_name", |_: u32| -> u32 { 0 })?;
    // Emscripten's fetch API: never started, so nothing to free or read.
    l.func_wrap("env", "emscripten_start_fetch", |_: u32| -> Result<()> {
        wasmtime::bail!("network access is not available in the sandbox")
    })?;
    l.func_wrap("env", "emscripten_fetch_free", |_: u32| {})?;
    l.func_wrap(
        "env",
        "_emscripten_fetch_get_response_headers_length",
        |_: u32| -> u32 { 0 },
    )?;
    l.func_wrap(
        "env",
        "_emscripten_fetch_get_response_headers",
        |_: u32, _: u32, _: u32| -> u32 { 0 },
    )?;
    l.func_wrap(
        "env",
        "emscripten_wget_data",
        |_: u32, _: u32, _: u32, _: u32| -> Result<()> {
            wasmtime::bail!("network access is not available in the sandbox")
        },
    )?;
    Ok(())
}
