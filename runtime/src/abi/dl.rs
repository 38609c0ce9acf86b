//! `dlopen`/`dlsym` for R's packages: the JS half of Emscripten's dynlink.c,
//! on the [`crate::dylink`] linker.

use super::mem;
use crate::dylink::{self, LoadFlags};
use crate::store::StoreData;
use wasmtime::error::{Context, Result};
use wasmtime::{AsContextMut, Caller, Linker};

// Offsets in `struct dso` (Emscripten's dynlink.c, wasm32).
const DSO_FLAGS: u32 = 4;
const DSO_MEM_ALLOCATED: u32 = 8;
const DSO_MEM_ADDR: u32 = 12;
const DSO_MEM_SIZE: u32 = 16;
const DSO_TABLE_ADDR: u32 = 20;
const DSO_TABLE_SIZE: u32 = 24;
const DSO_NAME: u32 = 36;
const RTLD_GLOBAL: i32 = 0x100;

pub fn add_to_linker(l: &mut Linker<StoreData>) -> Result<()> {
    l.func_wrap(
        "env",
        "_dlopen_js",
        |mut c: Caller<'_, StoreData>, handle: u32| -> Result<u32> {
            match dlopen(&mut c, handle) {
                Ok(()) => Ok(handle),
                // A trap or an exception in a constructor is not a load
                // failure to report: it ends the call like any other.
                Err(e) if escapes(&e) => Err(e),
                Err(e) => {
                    set_error(&mut c, &format!("Could not load dynamic lib: {e:#}"))?;
                    Ok(0)
                }
            }
        },
    )?;
    l.func_wrap(
        "env",
        "_dlsym_js",
        |mut c: Caller<'_, StoreData>, handle: u32, symbol: u32, index_ptr: u32| -> Result<u32> {
            let name = {
                let (m, _) = mem::split(&mut c);
                match mem::string(m, symbol) {
                    Ok(s) => s,
                    Err(_) => return Ok(0),
                }
            };
            match dlsym(&mut c, handle, &name, index_ptr)? {
                Some(v) => Ok(v),
                None => {
                    set_error(
                        &mut c,
                        &format!("Tried to lookup unknown symbol \"{name}\" in dynamic lib"),
                    )?;
                    Ok(0)
                }
            }
        },
    )?;
    l.func_wrap(
        "env",
        "_emscripten_dlopen_js",
        |_: u32, _: u32, _: u32, _: u32| -> Result<()> {
            wasmtime::bail!("asynchronous dlopen is not supported")
        },
    )?;
    l.func_wrap("env", "emscripten_promise_create", || -> Result<u32> {
        wasmtime::bail!("promises are not supported")
    })?;
    l.func_wrap(
        "env",
        "emscripten_promise_resolve",
        |_: u32, _: u32, _: u32| {},
    )?;
    l.func_wrap("env", "emscripten_promise_destroy", |_: u32| {})?;
    Ok(())
}

fn escapes(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<wasmtime::Trap>().is_some()
        || e.downcast_ref::<wasmtime::ThrownException>().is_some()
        || e.downcast_ref::<crate::trap::GuestTrap>().is_some()
}

fn dlopen(c: &mut Caller<'_, StoreData>, handle: u32) -> Result<()> {
    let (name, flags) = {
        let (m, _) = mem::split(c);
        let name = mem::string(m, handle.wrapping_add(DSO_NAME))
            .map_err(|_| wasmtime::format_err!("bad handle"))?;
        let flags = mem::read_i32(m, handle.wrapping_add(DSO_FLAGS))
            .map_err(|_| wasmtime::format_err!("bad handle"))?;
        (name, flags)
    };
    let mut local = Vec::new();
    let flags = LoadFlags {
        global: flags & RTLD_GLOBAL != 0,
    };
    let idx = dylink::load_library(&mut c.as_context_mut(), &name, flags, &mut local)?;
    let h = c.data_mut();
    // Local loads see their own dependencies.
    if let Some(lib) = h.linking.libs.get_mut(idx) {
        for dep in local {
            if dep != idx && !lib.local.contains(&dep) {
                lib.local.push(dep);
            }
        }
    }
    h.linking.by_handle.insert(handle, idx);
    let (mem_base, mem_size, table_base, table_size) = {
        let lib = &h.linking.libs[idx];
        (
            lib.mem_base,
            lib.info.dylink.mem_size,
            lib.table_base,
            lib.info.dylink.table_size,
        )
    };
    let (m, _) = mem::split(c);
    let w = |m: &mut [u8], off: u32, v: u32| mem::write_u32(m, handle.wrapping_add(off), v);
    (|| {
        mem::write_u8(m, handle.wrapping_add(DSO_MEM_ALLOCATED), 1)?;
        w(m, DSO_MEM_ADDR, mem_base)?;
        w(m, DSO_MEM_SIZE, mem_size)?;
        w(m, DSO_TABLE_ADDR, table_base)?;
        w(m, DSO_TABLE_SIZE, table_size)
    })()
    .map_err(|_| wasmtime::format_err!("bad handle"))
}

fn dlsym(
    c: &mut Caller<'_, StoreData>,
    handle: u32,
    name: &str,
    index_ptr: u32,
) -> Result<Option<u32>> {
    if handle == 0 {
        return dylink::global_symbol(&mut c.as_context_mut(), name);
    }
    let Some(&idx) = c.data().linking.by_handle.get(&handle) else {
        return Ok(None);
    };
    let lib = &c.data().linking.libs[idx];
    let Some(pos) = lib.info.export_order.iter().position(|n| n == name) else {
        return Ok(None);
    };
    let instance = lib.instance;
    let mem_base = lib.mem_base;
    let v = match instance.get_export(&mut *c, name) {
        Some(wasmtime::Extern::Func(f)) => {
            let (m, _) = mem::split(c);
            let _ = mem::write_u32(m, index_ptr, pos as u32);
            dylink::add_function(&mut c.as_context_mut(), idx, name, f)?
        }
        Some(wasmtime::Extern::Global(g)) => {
            g.get(&mut *c).i32().context("non-i32 symbol")? as u32 + mem_base
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

/// Report a dl error through the guest's `__dl_seterr(fmt, ...)`.
fn set_error(c: &mut Caller<'_, StoreData>, msg: &str) -> Result<()> {
    let main = c.data().linking.main().context("no main module")?;
    let malloc = main.get_typed_func::<u32, u32>(&mut *c, "malloc")?;
    let free = main.get_typed_func::<u32, ()>(&mut *c, "free")?;
    let seterr = main.get_typed_func::<(u32, u32), ()>(&mut *c, "__dl_seterr")?;
    let mut bytes = msg.replace('%', "%%").into_bytes();
    bytes.push(0);
    let p = malloc.call(&mut *c, bytes.len() as u32)?;
    if p == 0 {
        return Ok(());
    }
    {
        let (m, _) = mem::split(c);
        let _ = mem::write_bytes(m, p, &bytes);
    }
    seterr.call(&mut *c, (p, 0))?;
    free.call(&mut *c, p)?;
    Ok(())
}
