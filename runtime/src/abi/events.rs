//! The EM_ASM hooks R.wasm calls, and the browser-only imports it links but
//! never needs outside a browser.
//!
//! R calls its `handleEvents` hook from `R_ProcessEvents` thousands of times a
//! second; that is where the host stops a running evaluation: on a deadline,
//! a cross-thread interrupt or the output cap it sets `R_interrupts_pending`
//! and R unwinds with an ordinary interrupt condition.

use super::mem;
use crate::store::StoreData;
use wasmtime::Result;
use wasmtime::{Caller, Linker};

/// EM_ASM code addresses of webR 0.6.0's R.wasm (R.js `ASM_CONSTS`); they are
/// tied to that build, which the assets pin by checksum.
const ASM_SET_PROMPT: u32 = 12617548;
const ASM_READ_CONSOLE: u32 = 12617599;
const ASM_HANDLE_EVENTS: u32 = 12617643;
const ASM_DATA_VIEWER: u32 = 12617681;

pub fn add_to_linker(l: &mut Linker<StoreData>) -> Result<()> {
    l.func_wrap(
        "env",
        "emscripten_asm_const_int",
        |mut c: Caller<'_, StoreData>, code: u32, _sig: u32, _args: u32| -> i32 {
            match code {
                ASM_HANDLE_EVENTS => {
                    handle_events(&mut c);
                    0
                }
                // Non-interactive R never reads the console; EOF if it tries.
                ASM_READ_CONSOLE | ASM_SET_PROMPT | ASM_DATA_VIEWER => 0,
                _ => 0,
            }
        },
    )?;
    // webR's internet module asks JavaScript to fetch URLs; there is no
    // JavaScript here, so every script "fails" and R reports that the
    // connection cannot be opened.
    l.func_wrap("env", "emscripten_run_script_int", |_: u32| -> i32 { 0 })?;
    l.func_wrap("env", "emscripten_run_script_string", |_: u32| -> u32 { 0 })?;
    l.func_wrap("env", "emscripten_run_script", |_: u32| {})?;
    l.func_wrap("env", "emscripten_is_main_browser_thread", || -> i32 { 0 })?;
    for name in [
        "_emscripten_get_last_deviceorientation_event",
        "_emscripten_get_last_devicemotion_event",
        "_emscripten_get_last_mouse_event",
    ] {
        l.func_wrap("env", name, || -> u32 { 0 })?;
    }
    l.func_wrap(
        "env",
        "emscripten_set_canvas_element_size",
        |_: u32, _: i32, _: i32| -> i32 { -1 },
    )?;
    l.func_wrap("env", "_emscripten_fs_load_embedded_files", |_: u32| {
        // The embedded files are served from the assets' read-only tree
        // (extracted from these very records), so nothing is copied here.
    })?;
    Ok(())
}

/// Check deadline, interrupt and output cap; ask R to stop if one fired.
pub fn handle_events(c: &mut Caller<'_, StoreData>) {
    let h = c.data_mut();
    let output_over = h.output.exceeded();
    if !h.stop.poll(output_over) {
        return;
    }
    let Some(addr) = h.stop.r_interrupts_pending else {
        return;
    };
    let (m, _) = mem::split(c);
    let _ = mem::write_i32(m, addr, 1);
}
