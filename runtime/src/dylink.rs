//! Emscripten-style dynamic linking in Rust: the main module, the libraries it
//! needs at start, and the `.so` side modules R `dlopen`s at run time, sharing
//! one memory, one table and one global offset table (GOT).
//!
//! The rules follow Emscripten's loader (see the ABI brief): a side module gets
//! a `calloc`ed data area and a fresh table range before it is instantiated;
//! its function imports resolve from host functions, then the global namespace
//! (main plus libraries loaded `RTLD_GLOBAL`, first definition wins), then its
//! local scope, then lazily at first call; `GOT.mem`/`GOT.func` entries are one
//! shared mutable global per name.
//!
//! Everything needed to re-create the same linked state from a snapshot is kept
//! in serialisable form ([`LinkState`]).

use crate::engine::HakoEngine;
use crate::modinfo::ModuleInfo;
use crate::packages::{PackageModule, PackageModules, LIBRARY};
use crate::store::StoreData;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use wasmtime::error::{bail, format_err, Context, Result};
use wasmtime::{
    AsContextMut, Extern, ExternType, Func, FuncType, Global, GlobalType, Instance, Linker, Module,
    Mutability, Ref, StoreContextMut, Table, Val, ValType,
};

/// Where modules come from and how they are compiled; shared by the sandboxes
/// of a process.
pub struct Loader {
    pub engine: HakoEngine,
    pub linker: Linker<StoreData>,
    /// The asset directory: `R.wasm`, `lib/`, `rootfs/`.
    pub assets_dir: PathBuf,
    /// sha256 of each asset file by its path relative to `assets_dir`.
    pub sums: HashMap<String, String>,
    infos: Mutex<HashMap<String, Arc<ModuleInfo>>>,
}

/// A module ready to instantiate.
#[derive(Clone)]
pub struct Loaded {
    /// The asset path, or for a package module its guest path.
    pub rel_path: String,
    pub module: Module,
    pub info: Arc<ModuleInfo>,
    /// A package's module: every import must resolve when it is loaded.
    pub package: bool,
}

impl Loader {
    pub fn new(
        engine: HakoEngine,
        linker: Linker<StoreData>,
        assets_dir: PathBuf,
        sums: HashMap<String, String>,
    ) -> Self {
        Loader {
            engine,
            linker,
            assets_dir,
            sums,
            infos: Mutex::new(HashMap::new()),
        }
    }

    /// Compile (or fetch from cache) the asset at `rel_path`.
    pub fn load(&self, rel_path: &str) -> Result<Loaded> {
        let path = self.assets_dir.join(rel_path);
        let sum = match self.sums.get(rel_path) {
            Some(s) => s.clone(),
            None => bail!("{rel_path} is not part of the verified assets"),
        };
        let mut bytes_cache: Option<Vec<u8>> = None;
        let mut read = || -> Result<Vec<u8>> {
            if let Some(b) = &bytes_cache {
                return Ok(b.clone());
            }
            let b = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            bytes_cache = Some(b.clone());
            Ok(b)
        };
        let module = self.engine.module(&sum, &mut read)?;
        let info = {
            let cached = self.infos.lock().unwrap().get(&sum).cloned();
            match cached {
                Some(i) => i,
                None => {
                    let i = Arc::new(load_info(self.engine.cache_dir(), &sum, &mut read)?);
                    self.infos.lock().unwrap().insert(sum.clone(), i.clone());
                    i
                }
            }
        };
        Ok(Loaded {
            rel_path: rel_path.to_string(),
            module,
            info,
            package: false,
        })
    }

    /// Compile (or fetch from cache, keyed by its sha256 like every module)
    /// a package's side module. The bytes are hashed again when read, so a
    /// file changed since its tree was verified is refused, never compiled.
    pub fn load_package(&self, guest: &str, m: &PackageModule) -> Result<Loaded> {
        let mut bytes_cache: Option<Vec<u8>> = None;
        let mut read = || -> Result<Vec<u8>> {
            if let Some(b) = &bytes_cache {
                return Ok(b.clone());
            }
            let b =
                std::fs::read(&m.host).with_context(|| format!("reading {}", m.host.display()))?;
            let sum = hex::encode(Sha256::digest(&b));
            if sum != m.sha256 {
                bail!(
                    "{guest} changed since its package was verified (sha256 {sum}, manifest {})",
                    m.sha256
                );
            }
            bytes_cache = Some(b.clone());
            Ok(b)
        };
        let module = match self.engine.module(&m.sha256, &mut read) {
            Ok(module) => module,
            // emcc 3.1's C++ modules, untranslated: say what to do.
            Err(e) if format!("{e:#}").contains("legacy_exceptions") => bail!(
                "{guest} uses the legacy wasm exception encoding, which hako does not run: \
                 install its package with `hako pkg install` (which translates it to exnref)"
            ),
            Err(e) => return Err(e.context(format!("compiling {guest}"))),
        };
        let info = {
            let cached = self.infos.lock().unwrap().get(&m.sha256).cloned();
            match cached {
                Some(i) => i,
                None => {
                    let i = Arc::new(load_info(self.engine.cache_dir(), &m.sha256, &mut read)?);
                    self.infos
                        .lock()
                        .unwrap()
                        .insert(m.sha256.clone(), i.clone());
                    i
                }
            }
        };
        Ok(Loaded {
            rel_path: guest.to_string(),
            module,
            info,
            package: true,
        })
    }

    /// Map a library name as the guest gives it to an asset path. Absolute
    /// guest paths must lie in the read-only R tree; bare names are the BLAS
    /// and LAPACK libraries that webR ships beside R.wasm.
    pub fn locate(&self, name: &str) -> Result<String> {
        if !name.contains('/') {
            let rel = format!("lib/{name}");
            if self.sums.contains_key(&rel) {
                return Ok(rel);
            }
            let rel = format!("rootfs/usr/lib/R/lib/{name}");
            if self.sums.contains_key(&rel) {
                return Ok(rel);
            }
            bail!("library {name} not found");
        }
        let mut parts: Vec<&str> = Vec::new();
        for c in Path::new(name).components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => {
                    parts.pop();
                }
                Component::Normal(s) => parts.push(s.to_str().context("non-UTF-8 library path")?),
                Component::Prefix(_) => bail!("bad library path"),
            }
        }
        let rel = format!("rootfs/{}", parts.join("/"));
        if !rel.starts_with("rootfs/usr/lib/R/") || !self.sums.contains_key(&rel) {
            bail!("{name}: only libraries of the read-only R tree can be loaded");
        }
        Ok(rel)
    }
}

/// Module metadata is cached next to compiled code so that a warm start does
/// not read and parse the 18 MB R.wasm.
fn load_info(
    cache_dir: &Path,
    sum: &str,
    read: &mut dyn FnMut() -> Result<Vec<u8>>,
) -> Result<ModuleInfo> {
    let path = cache_dir.join("compiled").join(format!("{sum}.info"));
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(info) = bincode::deserialize::<InfoOnDisk>(&bytes) {
            if info.sum == sum {
                return Ok(info.into());
            }
        }
    }
    let info = ModuleInfo::parse(&read()?)?;
    let disk = InfoOnDisk::from_info(sum, &info);
    if let Ok(bytes) = bincode::serialize(&disk) {
        let _ = std::fs::create_dir_all(path.parent().unwrap());
        let _ = crate::engine::write_atomic(&path, &bytes);
    }
    Ok(info)
}

#[derive(Serialize, Deserialize)]
struct InfoOnDisk {
    sum: String,
    mem_size: u32,
    mem_align: u32,
    table_size: u32,
    needed: Vec<String>,
    weak_imports: Vec<String>,
    func_exports: Vec<(String, u32)>,
    export_order: Vec<String>,
    elem_slots: Vec<(u32, u32)>,
    elem_relative: bool,
}

impl InfoOnDisk {
    fn from_info(sum: &str, i: &ModuleInfo) -> Self {
        InfoOnDisk {
            sum: sum.to_string(),
            mem_size: i.dylink.mem_size,
            mem_align: i.dylink.mem_align,
            table_size: i.dylink.table_size,
            needed: i.dylink.needed.clone(),
            weak_imports: i.dylink.weak_imports.iter().cloned().collect(),
            func_exports: i
                .func_exports
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            export_order: i.export_order.clone(),
            elem_slots: i.elem_slots.iter().map(|(k, v)| (*k, *v)).collect(),
            elem_relative: i.elem_relative,
        }
    }
}

impl From<InfoOnDisk> for ModuleInfo {
    fn from(d: InfoOnDisk) -> Self {
        ModuleInfo {
            dylink: crate::modinfo::Dylink {
                mem_size: d.mem_size,
                mem_align: d.mem_align,
                table_size: d.table_size,
                needed: d.needed,
                weak_imports: d.weak_imports.into_iter().collect(),
            },
            func_exports: d.func_exports.into_iter().collect(),
            export_order: d.export_order,
            elem_slots: d.elem_slots.into_iter().collect(),
            elem_relative: d.elem_relative,
        }
    }
}

/// One loaded module.
pub struct Lib {
    pub name: String,
    pub rel_path: String,
    pub instance: Instance,
    pub info: Arc<ModuleInfo>,
    pub mem_base: u32,
    pub table_base: u32,
    pub global: bool,
    /// Libraries whose exports this one sees locally (its dependencies when it
    /// was loaded `RTLD_LOCAL`).
    pub local: Vec<usize>,
}

/// A GOT entry: one shared mutable i32 per symbol name.
pub struct GotEntry {
    pub global: Global,
    pub required: bool,
}

/// The linker's state in one store.
pub struct Linking {
    pub loader: Arc<Loader>,
    pub libs: Vec<Lib>,
    pub by_name: HashMap<String, usize>,
    pub by_handle: HashMap<u32, usize>,
    pub got: BTreeMap<String, GotEntry>,
    pub table: Option<Table>,
    pub stack_pointer: Option<Global>,
    /// Table slots appended for functions that had none: (slot, lib, export).
    pub appended: Vec<(u32, usize, String)>,
    appended_index: HashMap<(usize, String), u32>,
    /// The side modules of the sandbox's package set, by guest path.
    pub packages: Arc<PackageModules>,
}

/// Marks a host function in [`Linking::appended`].
const HOST_LIB: usize = usize::MAX;

/// Names Emscripten never enters in the GOT.
fn is_internal(name: &str) -> bool {
    matches!(
        name,
        "__cpp_exception"
            | "__c_longjmp"
            | "__wasm_apply_data_relocs"
            | "__dso_handle"
            | "__tls_size"
            | "__tls_align"
            | "__set_stack_limits"
            | "_emscripten_tls_init"
            | "__wasm_init_tls"
            | "__wasm_call_ctors"
            | "__start_em_asm"
            | "__stop_em_asm"
            | "__start_em_js"
            | "__stop_em_js"
    ) || name.starts_with("__em_js__")
}

impl Linking {
    pub fn new(loader: Arc<Loader>) -> Self {
        Linking {
            loader,
            libs: Vec::new(),
            by_name: HashMap::new(),
            by_handle: HashMap::new(),
            got: BTreeMap::new(),
            table: None,
            stack_pointer: None,
            appended: Vec::new(),
            appended_index: HashMap::new(),
            packages: Arc::default(),
        }
    }

    pub fn main(&self) -> Option<Instance> {
        self.libs.first().map(|l| l.instance)
    }
}

/// The store context every linker function works in.
pub type Cx<'a> = StoreContextMut<'a, StoreData>;

fn ld<'a>(store: &'a Cx<'_>) -> &'a Linking {
    &store.data().linking
}

fn ld_mut<'a>(store: &'a mut Cx<'_>) -> &'a mut Linking {
    &mut store.data_mut().linking
}

/// Instantiate the main module (R.wasm). It defines the memory and the table.
/// `got_values` pre-sets GOT entries (when restoring a snapshot).
pub fn instantiate_main(store: &mut Cx<'_>, main: &Loaded) -> Result<Instance> {
    let mut imports = Vec::new();
    for imp in main.module.imports() {
        let ext = match (imp.module(), imp.ty()) {
            ("GOT.func" | "GOT.mem", ExternType::Global(_)) => {
                got_entry(store, imp.name(), false)?.into()
            }
            (m @ ("env" | "wasi_snapshot_preview1"), ExternType::Func(ty)) => {
                match host_func(store, m, imp.name()) {
                    Some(f) => f.into(),
                    None => lazy_stub(store, ty, imp.name(), None).into(),
                }
            }
            (m, t) => bail!(
                "R.wasm imports {m}.{} ({t:?}), which hako does not provide",
                imp.name()
            ),
        };
        imports.push(ext);
    }
    let instance =
        Instance::new(&mut *store, &main.module, &imports).context("instantiating R.wasm")?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .context("R.wasm exports no memory")?;
    let table = instance
        .get_table(&mut *store, "__indirect_function_table")
        .context("R.wasm exports no table")?;
    let sp = instance
        .get_global(&mut *store, "__stack_pointer")
        .context("R.wasm exports no __stack_pointer")?;
    let data = store.data_mut();
    data.memory = Some(memory);
    data.linking.table = Some(table);
    data.linking.stack_pointer = Some(sp);
    data.linking.libs.push(Lib {
        name: "__main__".into(),
        rel_path: main.rel_path.clone(),
        instance,
        info: main.info.clone(),
        mem_base: 0,
        table_base: 0,
        global: true,
        local: Vec::new(),
    });
    data.linking.by_name.insert("__main__".into(), 0);
    data.linking.by_handle.insert(0, 0);
    Ok(instance)
}

fn host_func(store: &mut Cx<'_>, module: &str, name: &str) -> Option<Func> {
    let loader = ld(store).loader.clone();
    match loader.linker.get(&mut *store, module, name) {
        Ok(Extern::Func(f)) => Some(f),
        _ => None,
    }
}

/// The GOT global for `name`, created on first use. The GOT is one namespace
/// over every loaded module, whatever its `RTLD_LOCAL`/`GLOBAL` flag
/// (Emscripten enters every module's exports), so a new entry starts at the
/// first loaded definition, else 0 = unresolved.
fn got_entry(store: &mut Cx<'_>, name: &str, required: bool) -> Result<Global> {
    if let Some(e) = ld_mut(store).got.get_mut(name) {
        e.required |= required;
        return Ok(e.global);
    }
    let initial = got_symbol(store, name)?.unwrap_or(0);
    let ty = GlobalType::new(ValType::I32, Mutability::Var);
    let global = Global::new(&mut *store, ty, Val::I32(initial as i32))?;
    ld_mut(store)
        .got
        .insert(name.to_string(), GotEntry { global, required });
    Ok(global)
}

/// The first loaded module's definition of `name` as a GOT value.
fn got_symbol(store: &mut Cx<'_>, name: &str) -> Result<Option<u32>> {
    if is_internal(name) {
        return Ok(None);
    }
    for i in 0..ld(store).libs.len() {
        if let Some(v) = symbol_value(store, i, name)? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// The GOT value of export `name` of lib `idx`.
fn symbol_value(store: &mut Cx<'_>, idx: usize, name: &str) -> Result<Option<u32>> {
    let (instance, mem_base) = {
        let l = &ld(store).libs[idx];
        (l.instance, l.mem_base)
    };
    match instance.get_export(&mut *store, name) {
        Some(Extern::Func(f)) => Ok(Some(add_function(store, idx, name, f)?)),
        Some(Extern::Global(g)) => match g.get(&mut *store) {
            Val::I32(v) => Ok(Some((v as u32).wrapping_add(mem_base))),
            _ => Ok(None),
        },
        _ => Ok(None),
    }
}

/// The table slot of export `name` (function `f`) of lib `idx`: its own slot
/// when an element segment already placed it, else a slot appended once.
pub fn add_function(store: &mut Cx<'_>, idx: usize, name: &str, f: Func) -> Result<u32> {
    let l = ld(store);
    if idx != HOST_LIB {
        let lib = &l.libs[idx];
        if let Some(fi) = lib.info.func_exports.get(name) {
            if let Some(rel) = lib.info.elem_slots.get(fi) {
                let base = if lib.info.elem_relative {
                    lib.table_base
                } else {
                    0
                };
                return Ok(base + rel);
            }
        }
    }
    if let Some(slot) = l.appended_index.get(&(idx, name.to_string())) {
        return Ok(*slot);
    }
    let table = l.table.context("no table yet")?;
    let slot = table.grow(&mut *store, 1, Ref::Func(Some(f)))?;
    let slot = u32::try_from(slot).context("table too large")?;
    let l = ld_mut(store);
    l.appended.push((slot, idx, name.to_string()));
    l.appended_index.insert((idx, name.to_string()), slot);
    Ok(slot)
}

/// A function import resolved at its first call, for symbols defined by a
/// library that is loaded later (R.wasm's BLAS imports) or by the importer.
fn lazy_stub(store: &mut Cx<'_>, ty: FuncType, name: &str, lib: Option<usize>) -> Func {
    let name = name.to_string();
    let cell: Arc<OnceLock<Func>> = Arc::new(OnceLock::new());
    Func::new(&mut *store, ty, move |mut caller, params, results| {
        let f = match cell.get() {
            Some(f) => *f,
            None => {
                let f = resolve_func(&mut caller.as_context_mut(), &name, lib)
                    .ok_or_else(|| format_err!("undefined symbol: {name}"))?;
                let _ = cell.set(f);
                f
            }
        };
        f.call(&mut caller, params, results)
    })
}

/// A function by name: host functions, then the global namespace, then the
/// importer's local scope and own exports.
fn resolve_func(store: &mut Cx<'_>, name: &str, lib: Option<usize>) -> Option<Func> {
    if let Some(f) = host_func(store, "env", name) {
        return Some(f);
    }
    let mut order: Vec<usize> = {
        let l = ld(store);
        (0..l.libs.len()).filter(|&i| l.libs[i].global).collect()
    };
    if let Some(i) = lib {
        let l = ld(store);
        if let Some(me) = l.libs.get(i) {
            order.extend(me.local.iter().copied());
            order.push(i);
        }
    }
    for i in order {
        let inst = ld(store).libs[i].instance;
        if let Some(Extern::Func(f)) = inst.get_export(&mut *store, name) {
            return Some(f);
        }
    }
    None
}

/// Resolve a symbol in the global namespace (dlsym with handle 0).
pub fn global_symbol(store: &mut Cx<'_>, name: &str) -> Result<Option<u32>> {
    let globals: Vec<usize> = {
        let l = ld(store);
        (0..l.libs.len()).filter(|&i| l.libs[i].global).collect()
    };
    for i in globals {
        if let Some(v) = symbol_value(store, i, name)? {
            return Ok(Some(v));
        }
    }
    if let Some(f) = host_func(store, "env", name) {
        return Ok(Some(add_function(store, HOST_LIB, name, f)?));
    }
    Ok(None)
}

/// How a library load was asked for.
#[derive(Clone, Copy)]
pub struct LoadFlags {
    pub global: bool,
}

/// Load `name` (and what it needs) unless already loaded; returns its index.
/// `local` collects the libraries an `RTLD_LOCAL` load makes visible.
pub fn load_library(
    store: &mut Cx<'_>,
    name: &str,
    flags: LoadFlags,
    local: &mut Vec<usize>,
) -> Result<usize> {
    if let Some(&idx) = ld(store).by_name.get(name) {
        if flags.global && !ld(store).libs[idx].global {
            ld_mut(store).libs[idx].global = true;
        }
        if !local.contains(&idx) {
            local.push(idx);
        }
        return Ok(idx);
    }
    let loaded = locate_and_load(store, name)?;
    let mut my_local = Vec::new();
    for needed in &loaded.info.dylink.needed {
        load_library(store, needed, flags, &mut my_local)?;
    }
    let idx = instantiate_side(store, name, &loaded, flags.global, my_local.clone(), None)?;
    finish_side(store, idx)?;
    local.extend(my_local);
    local.push(idx);
    Ok(idx)
}

/// The module `name` names: a package's side module when it lies in the
/// package library, else an asset.
fn locate_and_load(store: &mut Cx<'_>, name: &str) -> Result<Loaded> {
    if let Some(guest) = normalize_abs(name) {
        if let Some(rest) = guest.strip_prefix(LIBRARY) {
            if rest.starts_with('/') {
                let m = ld(store).packages.get(&guest).cloned();
                let m = m.with_context(|| {
                    format!("{guest} is not a side module of the sandbox's package set")
                })?;
                return ld(store).loader.clone().load_package(&guest, &m);
            }
        }
    }
    let loader = ld(store).loader.clone();
    let rel = loader.locate(name)?;
    loader.load(&rel).with_context(|| format!("loading {name}"))
}

/// An absolute guest path, normalised lexically; None for a relative one.
fn normalize_abs(name: &str) -> Option<String> {
    if !name.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Placement of a side module: fresh when loading, recorded when restoring.
#[derive(Clone, Copy)]
pub struct Placement {
    pub mem_base: u32,
    pub table_base: u32,
}

/// Instantiate a side module: allocate its memory and table range (or use a
/// recorded placement), wire its imports, relocate and publish its exports.
pub fn instantiate_side(
    store: &mut Cx<'_>,
    name: &str,
    loaded: &Loaded,
    global: bool,
    local: Vec<usize>,
    placement: Option<Placement>,
) -> Result<usize> {
    let d = loaded.info.dylink.clone();
    if loaded.package && placement.is_none() {
        // Before anything is allocated or linked: refusing leaves no trace.
        let missing = missing_imports(store, loaded, &local);
        if !missing.is_empty() {
            bail!("{}", undefined_message(&missing));
        }
    }
    let table = ld(store).table.context("main module not instantiated")?;
    let placement = match placement {
        Some(p) => {
            let want = u64::from(p.table_base) + u64::from(d.table_size);
            let have = table.size(&mut *store);
            if have < u64::from(p.table_base) {
                table.grow(&mut *store, u64::from(p.table_base) - have, Ref::Func(None))?;
            }
            let have = table.size(&mut *store);
            if have < want {
                table.grow(&mut *store, want - have, Ref::Func(None))?;
            }
            p
        }
        None => {
            let align = 1u32 << d.mem_align;
            let mem_base = if d.mem_size > 0 {
                let size = d.mem_size.checked_add(align).context("library too large")?;
                let raw = guest_calloc(store, size)?;
                raw.checked_add(align - 1).context("library too large")? & !(align - 1)
            } else {
                0
            };
            let table_base = if d.table_size > 0 {
                let base = table.size(&mut *store);
                table.grow(&mut *store, u64::from(d.table_size), Ref::Func(None))?;
                u32::try_from(base).context("table too large")?
            } else {
                0
            };
            Placement {
                mem_base,
                table_base,
            }
        }
    };
    let idx = ld(store).libs.len();
    let memory = store.data().memory.context("no memory")?;
    let sp = ld(store).stack_pointer.context("no stack pointer")?;
    let mut imports: Vec<Extern> = Vec::new();
    for imp in loaded.module.imports() {
        let ext: Extern = match (imp.module(), imp.name(), imp.ty()) {
            ("env", "memory", ExternType::Memory(_)) => memory.into(),
            ("env", "__indirect_function_table", ExternType::Table(_)) => table.into(),
            ("env", "__stack_pointer", ExternType::Global(_)) => sp.into(),
            ("env", "__memory_base", ExternType::Global(_)) => {
                const_i32(store, placement.mem_base)?.into()
            }
            ("env", "__table_base", ExternType::Global(_)) => {
                const_i32(store, placement.table_base)?.into()
            }
            ("GOT.mem" | "GOT.func", sym, ExternType::Global(_)) => {
                let required = !d.weak_imports.contains(sym);
                got_entry(store, sym, required)?.into()
            }
            // C++ exceptions and wasm setjmp/longjmp must use R.wasm's own
            // tags, or a throw would pass every handler of the other side.
            ("env", tag @ ("__cpp_exception" | "__c_longjmp"), ExternType::Tag(_)) => {
                let main = ld(store).main().context("no main module")?;
                main.get_tag(&mut *store, tag)
                    .with_context(|| format!("R.wasm exports no tag {tag}"))?
                    .into()
            }
            ("env" | "wasi_snapshot_preview1", sym, ExternType::Func(ty)) => {
                match resolve_func_for_import(store, sym, &local) {
                    Some(f) => f.into(),
                    None => lazy_stub(store, ty, sym, Some(idx)).into(),
                }
            }
            (m, n, t) => bail!("{name} imports {m}.{n} ({t:?}), which hako does not provide"),
        };
        imports.push(ext);
    }
    let instance = Instance::new(&mut *store, &loaded.module, &imports)
        .with_context(|| format!("instantiating {name}"))?;
    let l = ld_mut(store);
    l.libs.push(Lib {
        name: name.to_string(),
        rel_path: loaded.rel_path.clone(),
        instance,
        info: loaded.info.clone(),
        mem_base: placement.mem_base,
        table_base: placement.table_base,
        global,
        local,
    });
    l.by_name.insert(name.to_string(), idx);
    Ok(idx)
}

/// Imports of a package module that nothing provides: not a host function,
/// not an export of any loaded module or of the module itself, not weak.
/// Emscripten would bind them to stubs that fail at the first call; a
/// package's are refused at load instead, so that a symbol R 4.6 hid
/// (`TRUELENGTH`, `R_nchar`, ...) is an error from `library()`, not a trap
/// in the middle of a task. webR's own modules keep lazy binding: parallel.so
/// (`sched_getaffinity`, loaded at boot), internet.so and webr.so import
/// functions no module defines, on paths R never takes here.
fn missing_imports(store: &mut Cx<'_>, loaded: &Loaded, local: &[usize]) -> Vec<String> {
    let own: std::collections::HashSet<&str> = loaded
        .info
        .export_order
        .iter()
        .map(String::as_str)
        .collect();
    let weak = &loaded.info.dylink.weak_imports;
    let mut missing = std::collections::BTreeSet::new();
    for imp in loaded.module.imports() {
        let name = imp.name();
        let ok = match (imp.module(), imp.ty()) {
            (m @ ("env" | "wasi_snapshot_preview1"), ExternType::Func(_)) => {
                own.contains(name)
                    || host_func(store, m, name).is_some()
                    || resolve_func_for_import(store, name, local).is_some()
            }
            ("GOT.mem" | "GOT.func", _) => {
                weak.contains(name)
                    || own.contains(name)
                    || got_is_set(store, name)
                    || defined_anywhere(store, name)
                    || host_func(store, "env", name).is_some()
            }
            _ => continue,
        };
        if !ok {
            missing.insert(name.to_string());
        }
    }
    missing.into_iter().collect()
}

/// The dlerror text for unresolved symbols; bounded, as R keeps only the
/// first few hundred bytes of it.
fn undefined_message(missing: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut msg = format!(
        "undefined symbol{}: {}",
        if missing.len() == 1 { "" } else { "s" },
        missing[..missing.len().min(SHOWN)].join(", ")
    );
    if missing.len() > SHOWN {
        msg.push_str(&format!(" and {} more", missing.len() - SHOWN));
    }
    msg.push_str(" (not provided by R.wasm or any loaded library)");
    msg
}

fn got_is_set(store: &mut Cx<'_>, name: &str) -> bool {
    let g = ld(store).got.get(name).map(|e| e.global);
    g.is_some_and(|g| g.get(&mut *store).i32().is_some_and(|v| v != 0))
}

/// Whether any loaded module exports `name` (the GOT's namespace), without
/// the side effects of computing its value.
fn defined_anywhere(store: &mut Cx<'_>, name: &str) -> bool {
    if is_internal(name) {
        return false;
    }
    let instances: Vec<Instance> = ld(store).libs.iter().map(|l| l.instance).collect();
    instances.into_iter().any(|i| {
        matches!(
            i.get_export(&mut *store, name),
            Some(Extern::Func(_) | Extern::Global(_))
        )
    })
}

/// Function imports resolved at instantiation, when already defined.
fn resolve_func_for_import(store: &mut Cx<'_>, name: &str, local: &[usize]) -> Option<Func> {
    if let Some(f) = host_func(store, "env", name) {
        return Some(f);
    }
    let mut order: Vec<usize> = {
        let l = ld(store);
        (0..l.libs.len()).filter(|&i| l.libs[i].global).collect()
    };
    order.extend(local.iter().copied());
    for i in order {
        let inst = ld(store).libs[i].instance;
        if let Some(Extern::Func(f)) = inst.get_export(&mut *store, name) {
            return Some(f);
        }
    }
    None
}

/// After a fresh load: fill the GOT from the library's exports, resolve what
/// is still open, apply data relocations and run constructors.
fn finish_side(store: &mut Cx<'_>, idx: usize) -> Result<()> {
    let open: Vec<String> = open_got(store).into_iter().map(|(k, _)| k).collect();
    let exports: std::collections::HashSet<String> = ld(store).libs[idx]
        .info
        .export_order
        .iter()
        .cloned()
        .collect();
    for name in &open {
        if exports.contains(name) && !is_internal(name) {
            if let Some(v) = symbol_value(store, idx, name)? {
                set_got(store, name, v)?;
            }
        }
    }
    report_undefined(store)?;
    let instance = ld(store).libs[idx].instance;
    for init in ["__wasm_apply_data_relocs", "__wasm_call_ctors"] {
        if let Some(f) = instance.get_func(&mut *store, init) {
            f.typed::<(), ()>(&mut *store)?.call(&mut *store, ())?;
        }
    }
    Ok(())
}

/// GOT entries still unresolved (0), with whether they are required.
fn open_got(store: &mut Cx<'_>) -> Vec<(String, bool)> {
    let entries: Vec<(String, Global, bool)> = ld(store)
        .got
        .iter()
        .map(|(k, e)| (k.clone(), e.global, e.required))
        .collect();
    entries
        .into_iter()
        .filter(|(_, g, _)| g.get(&mut *store).i32() == Some(0))
        .map(|(k, _, r)| (k, r))
        .collect()
}

fn set_got(store: &mut Cx<'_>, name: &str, v: u32) -> Result<()> {
    let g = ld(store).got.get(name).map(|e| e.global);
    if let Some(g) = g {
        g.set(&mut *store, Val::I32(v as i32))?;
    }
    Ok(())
}

/// Resolve every open GOT entry from the global namespace; a required one
/// that stays open is an error naming it.
fn report_undefined(store: &mut Cx<'_>) -> Result<()> {
    let open = open_got(store);
    for (name, required) in open {
        let found = match global_symbol(store, &name)? {
            Some(v) => Some(v),
            None => got_symbol(store, &name)?,
        };
        match found {
            Some(v) => set_got(store, &name, v)?,
            None if required => bail!("undefined symbol: {name}"),
            None => {}
        }
    }
    Ok(())
}

fn const_i32(store: &mut Cx<'_>, v: u32) -> Result<Global> {
    Global::new(
        &mut *store,
        GlobalType::new(ValType::I32, Mutability::Const),
        Val::I32(v as i32),
    )
}

/// `calloc` in the guest, for a side module's static data.
fn guest_calloc(store: &mut Cx<'_>, size: u32) -> Result<u32> {
    let main = ld(store).main().context("no main module")?;
    let calloc = main.get_typed_func::<(u32, u32), u32>(&mut *store, "calloc")?;
    let p = calloc.call(&mut *store, (size, 1))?;
    if p == 0 {
        bail!("out of memory loading a library ({size} bytes)");
    }
    Ok(p)
}

/// The linker's state, serialisable, to re-create it from a snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkState {
    pub libs: Vec<LibState>,
    pub handles: Vec<(u32, usize)>,
    pub got: Vec<(String, u32, bool)>,
    pub appended: Vec<(u32, usize, String)>,
    pub table_len: u64,
    pub stack_pointer: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LibState {
    pub name: String,
    pub rel_path: String,
    pub mem_base: u32,
    pub table_base: u32,
    pub global: bool,
    pub local: Vec<usize>,
}

/// Capture the linker's state (between evaluations).
pub fn capture(store: &mut Cx<'_>) -> Result<LinkState> {
    let table = ld(store).table.context("no table")?;
    let sp = ld(store).stack_pointer.context("no stack pointer")?;
    let table_len = table.size(&mut *store);
    let stack_pointer = sp.get(&mut *store).i32().context("stack pointer type")? as u32;
    let got_globals: Vec<(String, Global, bool)> = ld(store)
        .got
        .iter()
        .map(|(k, e)| (k.clone(), e.global, e.required))
        .collect();
    let got = got_globals
        .into_iter()
        .map(|(k, g, r)| (k, g.get(&mut *store).i32().unwrap_or(0) as u32, r))
        .collect();
    let l = ld(store);
    Ok(LinkState {
        libs: l
            .libs
            .iter()
            .map(|lib| LibState {
                name: lib.name.clone(),
                rel_path: lib.rel_path.clone(),
                mem_base: lib.mem_base,
                table_base: lib.table_base,
                global: lib.global,
                local: lib.local.clone(),
            })
            .collect(),
        handles: l.by_handle.iter().map(|(h, i)| (*h, *i)).collect(),
        got,
        appended: l.appended.clone(),
        table_len,
        stack_pointer,
    })
}

/// Re-create a captured linked state in a fresh store: main, then every side
/// module at its recorded place, without running any initialiser (the memory
/// image already holds their effects). The caller restores memory afterwards.
pub fn restore(store: &mut Cx<'_>, state: &LinkState) -> Result<()> {
    let loader = ld(store).loader.clone();
    let main_state = state.libs.first().context("snapshot has no main module")?;
    let main = loader.load(&main_state.rel_path)?;
    // GOT entries first, with their recorded values, so imports bind to them.
    for (name, value, required) in &state.got {
        let ty = GlobalType::new(ValType::I32, Mutability::Var);
        let global = Global::new(&mut *store, ty, Val::I32(*value as i32))?;
        ld_mut(store).got.insert(
            name.clone(),
            GotEntry {
                global,
                required: *required,
            },
        );
    }
    instantiate_main(store, &main)?;
    for lib in &state.libs[1..] {
        let loaded = if lib.rel_path.starts_with('/') {
            locate_and_load(store, &lib.rel_path)?
        } else {
            loader.load(&lib.rel_path)?
        };
        let placement = Placement {
            mem_base: lib.mem_base,
            table_base: lib.table_base,
        };
        instantiate_side(
            store,
            &lib.name,
            &loaded,
            lib.global,
            lib.local.clone(),
            Some(placement),
        )?;
    }
    let table = ld(store).table.context("no table")?;
    let have = table.size(&mut *store);
    if have < state.table_len {
        table.grow(&mut *store, state.table_len - have, Ref::Func(None))?;
    }
    for (slot, idx, name) in &state.appended {
        let f = if *idx == HOST_LIB {
            host_func(store, "env", name)
        } else {
            let inst = ld(store).libs.get(*idx).context("bad snapshot")?.instance;
            inst.get_func(&mut *store, name)
        }
        .with_context(|| format!("snapshot names unknown function {name}"))?;
        table.set(&mut *store, u64::from(*slot), Ref::Func(Some(f)))?;
        let l = ld_mut(store);
        l.appended.push((*slot, *idx, name.clone()));
        l.appended_index.insert((*idx, name.clone()), *slot);
    }
    let l = ld_mut(store);
    l.by_handle = state.handles.iter().copied().collect();
    let main = l.main().context("no main")?;
    // The stack limits live in unexported globals that only this sets.
    main.get_typed_func::<(), ()>(&mut *store, "emscripten_stack_init")?
        .call(&mut *store, ())?;
    let sp = ld(store).stack_pointer.context("no stack pointer")?;
    sp.set(&mut *store, Val::I32(state.stack_pointer as i32))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn loader(cache: &Path) -> Loader {
        let engine = HakoEngine::new(cache).unwrap();
        let linker = Linker::new(engine.engine());
        Loader::new(engine, linker, cache.to_path_buf(), HashMap::new())
    }

    /// A package's side module is compiled once per content: a new process
    /// (fresh engine) finds the code on disk by the manifest's hash.
    #[test]
    fn package_modules_are_cached_on_disk_by_hash_and_checked_when_read() {
        let t = tempfile::tempdir().unwrap();
        let cache = t.path().join("cache");
        let so = t.path().join("pkg.so");
        std::fs::write(&so, EMPTY_MODULE).unwrap();
        let m = PackageModule {
            host: so.clone(),
            sha256: hex::encode(Sha256::digest(EMPTY_MODULE)),
            size: EMPTY_MODULE.len() as u64,
        };
        let guest = "/hako/library/pkg/libs/pkg.so";
        let first = loader(&cache).load_package(guest, &m).unwrap();
        assert!(first.package);
        assert_eq!(first.rel_path, guest);

        // The file is not even read again.
        std::fs::remove_file(&so).unwrap();
        loader(&cache).load_package(guest, &m).unwrap();

        // Without cached code, bytes that do not hash to the manifest's
        // sum are refused, never compiled.
        std::fs::write(&so, b"\0asm\x01\0\0\0\0\x01\0").unwrap();
        let other = t.path().join("other-cache");
        let e = loader(&other).load_package(guest, &m).err().unwrap();
        assert!(format!("{e:#}").contains("changed since"), "{e:#}");
    }

    /// R keeps a bounded dlerror: the message names the first symbols and
    /// counts the rest.
    #[test]
    fn undefined_symbols_are_named_and_bounded() {
        let one = undefined_message(&["TRUELENGTH".to_string()]);
        assert!(one.starts_with("undefined symbol: TRUELENGTH ("), "{one}");
        let many: Vec<String> = (0..40).map(|i| format!("sym{i}")).collect();
        let msg = undefined_message(&many);
        assert!(
            msg.contains("sym0, sym1") && msg.contains("sym11 and 28 more"),
            "{msg}"
        );
        assert!(!msg.contains("sym12,") && msg.len() < 300, "{msg}");
    }

    #[test]
    fn guest_paths_normalise_lexically() {
        assert_eq!(
            normalize_abs("/hako//library/./x/../pkg/libs/pkg.so").as_deref(),
            Some("/hako/library/pkg/libs/pkg.so")
        );
        assert_eq!(normalize_abs("/../..").as_deref(), Some("/"));
        assert_eq!(normalize_abs("pkg.so"), None);
    }
}
