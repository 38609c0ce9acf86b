//! Process-level imports: environment, program name, exit and abort, heap
//! growth, randomness, `system()`, mmap and signals. None of them reaches the
//! host's own environment, processes or signals.

use super::mem;
use crate::errno::{EFAULT, ENOSYS, SUCCESS};
use crate::store::StoreData;
use crate::trap::GuestTrap;
use wasmtime::Result;
use wasmtime::{Caller, Linker};

const WASI: &str = "wasi_snapshot_preview1";

/// Wasm page size.
const PAGE: u64 = 65536;
/// wasm32's ceiling for R.wasm's memory (its declared maximum).
const HEAP_MAX: u64 = 2 << 30;

pub fn add_to_linker(l: &mut Linker<StoreData>) -> Result<()> {
    l.func_wrap(
        WASI,
        "environ_sizes_get",
        |mut c: Caller<'_, StoreData>, count: u32, size: u32| -> i32 {
            let (m, h) = mem::split(&mut c);
            let total: usize = h.env.iter().map(|e| e.len() + 1).sum();
            let r = mem::write_u32(m, count, h.env.len() as u32)
                .and_then(|_| mem::write_u32(m, size, total as u32));
            r.map_or_else(|e| e.0, |_| SUCCESS)
        },
    )?;
    l.func_wrap(
        WASI,
        "environ_get",
        |mut c: Caller<'_, StoreData>, ptrs: u32, buf: u32| -> i32 {
            let (m, h) = mem::split(&mut c);
            let mut at = buf;
            for (i, e) in h.env.iter().enumerate() {
                let slot = ptrs.wrapping_add(4 * i as u32);
                let mut bytes = e.as_bytes().to_vec();
                bytes.push(0);
                if mem::write_u32(m, slot, at)
                    .and_then(|_| mem::write_bytes(m, at, &bytes))
                    .is_err()
                {
                    return EFAULT.0;
                }
                at = at.wrapping_add(bytes.len() as u32);
            }
            SUCCESS
        },
    )?;
    l.func_wrap(
        "env",
        "_emscripten_get_progname",
        |mut c: Caller<'_, StoreData>, buf: u32, len: u32| {
            let (m, _) = mem::split(&mut c);
            if len >= 2 {
                let _ = mem::write_bytes(m, buf, b"R\0");
            }
        },
    )?;
    l.func_wrap("env", "exit", |code: i32| -> Result<()> {
        Err(GuestTrap::Exit(code).into())
    })?;
    l.func_wrap(WASI, "proc_exit", |code: i32| -> Result<()> {
        Err(GuestTrap::Exit(code).into())
    })?;
    l.func_wrap("env", "_abort_js", || -> Result<()> {
        Err(GuestTrap::Abort("abort()".into()).into())
    })?;
    l.func_wrap(
        "env",
        "__assert_fail",
        |mut c: Caller<'_, StoreData>, cond: u32, file: u32, line: u32, _func: u32| -> Result<()> {
            let (m, _) = mem::split(&mut c);
            let cond = mem::string(m, cond).unwrap_or_default();
            let file = mem::string(m, file).unwrap_or_default();
            Err(GuestTrap::Abort(format!("assertion failed: {cond} at {file}:{line}")).into())
        },
    )?;
    // No shell exists: `system(NULL)` says so, any command fails.
    l.func_wrap("env", "_emscripten_system", |cmd: u32| -> i32 {
        if cmd == 0 {
            0
        } else {
            ENOSYS.negated()
        }
    })?;
    l.func_wrap(
        WASI,
        "random_get",
        |mut c: Caller<'_, StoreData>, buf: u32, len: u32| -> i32 {
            let (m, _) = mem::split(&mut c);
            match mem::bytes_mut(m, buf, len) {
                Ok(out) => {
                    fill_random(out);
                    SUCCESS
                }
                Err(e) => e.0,
            }
        },
    )?;
    l.func_wrap(
        "env",
        "emscripten_get_heap_max",
        |c: Caller<'_, StoreData>| -> u32 { heap_max(c.data()) as u32 },
    )?;
    l.func_wrap("env", "emscripten_resize_heap", resize_heap)?;
    l.func_wrap(
        "env",
        "_mmap_js",
        |_: u32, _: u32, _: u32, _: u32, _: i64, _: u32, _: u32| -> i32 { ENOSYS.negated() },
    )?;
    l.func_wrap(
        "env",
        "_munmap_js",
        |_: u32, _: u32, _: u32, _: u32, _: u32, _: i64| -> i32 { ENOSYS.negated() },
    )?;
    l.func_wrap(
        "env",
        "_msync_js",
        |_: u32, _: u32, _: u32, _: u32, _: u32, _: i64| -> i32 { ENOSYS.negated() },
    )?;
    l.func_wrap("env", "__call_sighandler", |_: u32, _: u32| {})?;
    l.func_wrap("env", "_setitimer_js", |_: u32, _: f64| -> i32 { 0 })?;
    l.func_wrap("env", "_emscripten_runtime_keepalive_clear", || {})?;
    l.func_wrap(
        "env",
        "_emscripten_log_formatted",
        |mut c: Caller<'_, StoreData>, _level: i32, msg: u32| {
            let (m, h) = mem::split(&mut c);
            if let Ok(s) = mem::cstr(m, msg) {
                let mut line = s.to_vec();
                line.push(b'\n');
                h.output.write(crate::output::Stream::Stderr, &line);
            }
        },
    )?;
    Ok(())
}

/// Largest heap the guest may ask for: the sandbox's memory cap.
fn heap_max(h: &StoreData) -> u64 {
    (h.limiter.max_bytes as u64).min(HEAP_MAX) / PAGE * PAGE
}

/// Grow memory to at least `requested` bytes, with headroom like Emscripten
/// (x1.2, at most +96 MiB) so a growing heap does not grow page by page.
fn resize_heap(mut c: Caller<'_, StoreData>, requested: u32) -> i32 {
    let Some(memory) = c.data().memory else {
        return 0;
    };
    let max = heap_max(c.data());
    let requested = u64::from(requested);
    let current = memory.data_size(&c) as u64;
    if requested <= current {
        return 1;
    }
    if requested > max {
        c.data_mut().limiter.hit = true;
        return 0;
    }
    let headroom = (current / 5).min(96 << 20);
    for target in [requested.max(current + headroom), requested] {
        let target = target.min(max).div_ceil(PAGE) * PAGE;
        let pages = (target - current).div_ceil(PAGE);
        if memory.grow(&mut c, pages).is_ok() {
            return 1;
        }
    }
    0
}

/// Host randomness for the guest (`/dev/urandom`, `getentropy`).
pub fn fill_random(out: &mut [u8]) {
    let mut filled = 0;
    while filled < out.len() {
        // SAFETY: getrandom writes at most the given length into the buffer.
        let n = unsafe {
            libc::getrandom(
                out[filled..].as_mut_ptr() as *mut libc::c_void,
                out.len() - filled,
                0,
            )
        };
        if n <= 0 {
            break;
        }
        filled += n as usize;
    }
}
