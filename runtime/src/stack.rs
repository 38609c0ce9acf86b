//! Native stack for running wasm.
//!
//! Wasmtime lets wasm use up to [`MAX_WASM_STACK`] of the calling thread's
//! native stack and traps beyond it; but if the thread has less than that,
//! the guard page is hit first and the whole process aborts ("has overflowed
//! its stack"). Deeply nested R objects (deparse, unserialize, unlist of a
//! list nested 1e4 deep) reach that depth in C code that has no stack check.
//! So wasm only ever runs with at least [`MIN_STACK_LEFT`] of stack below it:
//! on a thread without that much, the runtime runs the call on a fresh
//! thread of [`SANDBOX_THREAD_STACK`], so no caller can forget.

use crate::engine::MAX_WASM_STACK;
use std::cell::Cell;

/// Stack size for every thread that runs sandboxes: the wasm allowance plus
/// room for host frames (host calls from deep wasm, the loader compiling a
/// library on `dyn.load`). Reserved, not committed: untouched pages cost
/// nothing.
pub const SANDBOX_THREAD_STACK: usize = 4 * MAX_WASM_STACK;

/// Stack that must be left below the caller for wasm to run on this thread.
pub const MIN_STACK_LEFT: usize = MAX_WASM_STACK + (4 << 20);

thread_local! {
    /// Lowest usable address of this thread's stack, once looked up.
    static STACK_LOW: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Bytes of native stack left below the caller, if the platform says.
pub fn stack_left() -> Option<usize> {
    let here = {
        let marker = 0u8;
        std::hint::black_box(&marker) as *const u8 as usize
    };
    let low = match STACK_LOW.with(|c| c.get()) {
        Some(low) => low,
        None => {
            let low = stack_low()?;
            STACK_LOW.with(|c| c.set(Some(low)));
            low
        }
    };
    Some(here.saturating_sub(low))
}

#[cfg(target_os = "linux")]
fn stack_low() -> Option<usize> {
    // SAFETY: pthread_getattr_np fills an attribute object for the calling
    // thread, which is destroyed after its stack bounds are read.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let mut guard: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0
            && libc::pthread_attr_getguardsize(&attr, &mut guard) == 0;
        libc::pthread_attr_destroy(&mut attr);
        // The guard may or may not be counted in the reported stack: assume it is.
        ok.then(|| addr as usize + guard.max(64 << 10))
    }
}

#[cfg(not(target_os = "linux"))]
fn stack_low() -> Option<usize> {
    None
}

/// Run `f` where at least [`MIN_STACK_LEFT`] of native stack is free: here,
/// or on a fresh thread of [`SANDBOX_THREAD_STACK`] when this thread has too
/// little (or its stack cannot be measured). A panic in `f` propagates.
pub fn with_stack<R: Send>(f: impl FnOnce() -> R + Send) -> std::io::Result<R> {
    if stack_left().is_some_and(|n| n >= MIN_STACK_LEFT) {
        return Ok(f());
    }
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("hako-sandbox".into())
            .stack_size(SANDBOX_THREAD_STACK)
            .spawn_scoped(s, f)?;
        Ok(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_threads_hop_big_threads_stay() {
        let small = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| {
                let me = std::thread::current().id();
                let left = stack_left().unwrap();
                assert!(left < 1 << 20, "{left}");
                with_stack(|| {
                    assert!(stack_left().unwrap() >= MIN_STACK_LEFT);
                    std::thread::current().id()
                })
                .unwrap()
                    != me
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(small, "a 1 MiB thread must hand wasm to a bigger one");
        let big = std::thread::Builder::new()
            .stack_size(SANDBOX_THREAD_STACK)
            .spawn(|| {
                let me = std::thread::current().id();
                with_stack(|| std::thread::current().id()).unwrap() == me
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(big, "a sandbox thread runs wasm itself");
    }
}
