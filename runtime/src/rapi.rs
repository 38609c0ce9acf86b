//! The few R C-API entry points the host calls, bound once per instance.
//!
//! Every call goes through `R_tryEval` (R's top-level context), so an R error
//! never unwinds through host frames.

use wasmtime::error::{bail, Context, Result};
use wasmtime::{AsContextMut, Instance, Memory, TypedFunc};

/// SEXP: a pointer into guest memory.
pub type Sexp = u32;

const CE_UTF8: i32 = 1;
const RAWSXP: i32 = 24;

pub struct RApi {
    malloc: TypedFunc<u32, u32>,
    free: TypedFunc<u32, ()>,
    mk_char_len_ce: TypedFunc<(u32, i32, i32), Sexp>,
    scalar_string: TypedFunc<Sexp, Sexp>,
    install: TypedFunc<u32, Sexp>,
    lang2: TypedFunc<(Sexp, Sexp), Sexp>,
    lang3: TypedFunc<(Sexp, Sexp, Sexp), Sexp>,
    try_eval: TypedFunc<(Sexp, Sexp, u32), Sexp>,
    protect: TypedFunc<Sexp, Sexp>,
    unprotect: TypedFunc<i32, ()>,
    alloc_vector: TypedFunc<(i32, i32), Sexp>,
    raw: TypedFunc<Sexp, u32>,
    xlength: TypedFunc<Sexp, i32>,
    vector_elt: TypedFunc<(Sexp, i32), Sexp>,
    as_integer: TypedFunc<Sexp, i32>,
    find_var: TypedFunc<(Sexp, Sexp), Sexp>,
    preserve: TypedFunc<Sexp, ()>,
    memory: Memory,
    /// Address of the `R_GlobalEnv` variable.
    global_env_addr: u32,
    base_env_addr: u32,
    /// Address of `R_interrupts_pending`.
    pub interrupts_pending: u32,
}

impl RApi {
    pub fn bind(store: &mut impl AsContextMut, main: Instance) -> Result<RApi> {
        let mut s = store.as_context_mut();
        macro_rules! f {
            ($name:literal) => {
                main.get_typed_func(&mut s, $name)
                    .context(concat!("R.wasm export ", $name))?
            };
        }
        let addr = |s: &mut wasmtime::StoreContextMut<'_, _>, name: &str| -> Result<u32> {
            let g = main
                .get_global(&mut *s, name)
                .with_context(|| format!("R.wasm export {name}"))?;
            Ok(g.get(&mut *s).i32().context("global type")? as u32)
        };
        Ok(RApi {
            malloc: f!("malloc"),
            free: f!("free"),
            mk_char_len_ce: f!("Rf_mkCharLenCE"),
            scalar_string: f!("Rf_ScalarString"),
            install: f!("Rf_install"),
            lang2: f!("Rf_lang2"),
            lang3: f!("Rf_lang3"),
            try_eval: f!("R_tryEval"),
            protect: f!("Rf_protect"),
            unprotect: f!("Rf_unprotect"),
            alloc_vector: f!("Rf_allocVector"),
            raw: f!("RAW"),
            xlength: f!("Rf_xlength"),
            vector_elt: f!("VECTOR_ELT"),
            as_integer: f!("Rf_asInteger"),
            find_var: f!("Rf_findVar"),
            preserve: f!("R_PreserveObject"),
            memory: main.get_memory(&mut s, "memory").context("memory")?,
            global_env_addr: addr(&mut s, "R_GlobalEnv")?,
            base_env_addr: addr(&mut s, "R_BaseEnv")?,
            interrupts_pending: addr(&mut s, "R_interrupts_pending")?,
        })
    }

    fn read_u32(&self, store: &mut impl AsContextMut, addr: u32) -> Result<u32> {
        let mut b = [0u8; 4];
        self.memory
            .read(store.as_context_mut(), addr as usize, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn global_env(&self, store: &mut impl AsContextMut) -> Result<Sexp> {
        self.read_u32(store, self.global_env_addr)
    }

    pub fn base_env(&self, store: &mut impl AsContextMut) -> Result<Sexp> {
        self.read_u32(store, self.base_env_addr)
    }

    /// Copy `bytes` into a fresh guest allocation (NUL-terminated).
    fn alloc_bytes(&self, store: &mut impl AsContextMut, bytes: &[u8]) -> Result<u32> {
        let len = u32::try_from(bytes.len() + 1).context("string too large for the guest")?;
        let p = self.malloc.call(&mut *store, len)?;
        if p == 0 {
            bail!("guest out of memory");
        }
        self.memory
            .write(store.as_context_mut(), p as usize, bytes)?;
        self.memory
            .write(store.as_context_mut(), p as usize + bytes.len(), &[0])?;
        Ok(p)
    }

    /// An R character scalar (unprotected).
    pub fn string(&self, store: &mut impl AsContextMut, s: &str) -> Result<Sexp> {
        let p = self.alloc_bytes(store, s.as_bytes())?;
        let len = i32::try_from(s.len()).context("string too large")?;
        let ch = self.mk_char_len_ce.call(&mut *store, (p, len, CE_UTF8));
        self.free.call(&mut *store, p)?;
        self.scalar_string.call(&mut *store, ch?)
    }

    pub fn install(&self, store: &mut impl AsContextMut, name: &str) -> Result<Sexp> {
        let p = self.alloc_bytes(store, name.as_bytes())?;
        let sym = self.install.call(&mut *store, p);
        self.free.call(&mut *store, p)?;
        sym
    }

    /// An R raw vector holding `bytes` (unprotected).
    pub fn raw_vector(&self, store: &mut impl AsContextMut, bytes: &[u8]) -> Result<Sexp> {
        let n = i32::try_from(bytes.len()).context("payload too large for wasm32 R")?;
        let v = self.alloc_vector.call(&mut *store, (RAWSXP, n))?;
        let p = self.raw.call(&mut *store, v)?;
        self.memory
            .write(store.as_context_mut(), p as usize, bytes)?;
        Ok(v)
    }

    /// The bytes of an R raw vector.
    pub fn raw_bytes(&self, store: &mut impl AsContextMut, v: Sexp) -> Result<Vec<u8>> {
        let n = self.xlength.call(&mut *store, v)?;
        let n = usize::try_from(n).context("negative length")?;
        let p = self.raw.call(&mut *store, v)?;
        let mut out = vec![0u8; n];
        self.memory
            .read(store.as_context_mut(), p as usize, &mut out)?;
        Ok(out)
    }

    pub fn protect(&self, store: &mut impl AsContextMut, s: Sexp) -> Result<Sexp> {
        self.protect.call(&mut *store, s)
    }

    pub fn unprotect(&self, store: &mut impl AsContextMut, n: i32) -> Result<()> {
        self.unprotect.call(&mut *store, n)
    }

    pub fn lang2(&self, store: &mut impl AsContextMut, f: Sexp, a: Sexp) -> Result<Sexp> {
        self.lang2.call(&mut *store, (f, a))
    }

    pub fn lang3(&self, store: &mut impl AsContextMut, f: Sexp, a: Sexp, b: Sexp) -> Result<Sexp> {
        self.lang3.call(&mut *store, (f, a, b))
    }

    pub fn vector_elt(&self, store: &mut impl AsContextMut, v: Sexp, i: i32) -> Result<Sexp> {
        self.vector_elt.call(&mut *store, (v, i))
    }

    pub fn as_integer(&self, store: &mut impl AsContextMut, v: Sexp) -> Result<i32> {
        self.as_integer.call(&mut *store, v)
    }

    pub fn find_var(&self, store: &mut impl AsContextMut, sym: Sexp, env: Sexp) -> Result<Sexp> {
        self.find_var.call(&mut *store, (sym, env))
    }

    pub fn preserve(&self, store: &mut impl AsContextMut, s: Sexp) -> Result<()> {
        self.preserve.call(&mut *store, s)
    }

    /// `R_tryEval(call, env)`: the value, or `None` when R signalled an error
    /// that reached the top level.
    pub fn try_eval(
        &self,
        store: &mut impl AsContextMut,
        call: Sexp,
        env: Sexp,
    ) -> Result<Option<Sexp>> {
        let flag = self.malloc.call(&mut *store, 4)?;
        if flag == 0 {
            bail!("guest out of memory");
        }
        self.memory
            .write(store.as_context_mut(), flag as usize, &0i32.to_le_bytes())?;
        let v = self.try_eval.call(&mut *store, (call, env, flag));
        let err = self.read_u32(store, flag);
        self.free.call(&mut *store, flag)?;
        let v = v?;
        Ok(if err? != 0 { None } else { Some(v) })
    }
}
