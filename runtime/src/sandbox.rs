//! The public API: a [`Runtime`] per process (engine, compiled modules, the
//! pristine snapshot) and any number of [`Sandbox`]es made from it.

use crate::abi;
use crate::dylink::{self, Linking, LoadFlags, Loader};
use crate::engine::HakoEngine;
use crate::limits::{Interrupt, Limit, MemoryLimiter, Stop};
use crate::memory::{self, MemCtl};
use crate::output::{Chunk, Output};
use crate::packages::PackageSet;
use crate::pristine::{Pristine, PristineState, BOOT_VERSION};
use crate::rapi::{RApi, Sexp};
use crate::store::StoreData;
use crate::trap::GuestTrap;
use crate::vfs::{MountSpec, RoImage, Vfs, VfsConfig};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wasmtime::error::{bail, format_err, Context, Result};
use wasmtime::{AsContextMut, Linker, Store, UpdateDeadline, Val};

/// The guest's home directory (webR's).
pub const HOME: &str = "/home/web_user";

/// Epoch tick: how often the backstop looks at a running evaluation.
const TICK: Duration = Duration::from_millis(10);

/// The guest's whole environment. Nothing of the host's environment is passed.
const GUEST_ENV: &[&str] = &[
    "R_HOME=/usr/lib/R",
    "HOME=/home/web_user",
    "USER=web_user",
    "LOGNAME=web_user",
    "TMPDIR=/tmp",
    "TZ=UTC",
    "LANG=C.UTF-8",
    // Measured (see the README): in this wasm build R's byte-code engine
    // runs slower than its AST interpreter, 3x on tryCatch and lm(), and the
    // JIT compiles every task's closures again after each reset. So the JIT
    // is off, and byte code already in base R's packages is run as the AST
    // it was compiled from.
    "R_ENABLE_JIT=0",
    "R_DISABLE_BYTECODE=1",
    "PWD=/home/web_user",
    // The LLVM profile runtime linked into R.wasm would write default.profraw.
    "LLVM_PROFILE_FILE=/dev/null",
];

const BOOT_ARGS: &[&str] = &["R", "--vanilla", "--quiet", "--no-echo"];

/// The status codes guest.R's runner returns (`hako$eval_text`, and the first
/// element of `hako$task`'s and `hako$task_error`'s list), named once here.
/// They never leave the runtime: callers see [`EvalResult::ok`],
/// [`TaskOutcome`] or [`SandboxError::Limit`].
mod status {
    /// The code ran; a task's bytes are its value.
    pub const VALUE: i32 = 0;
    /// An R error; a task's bytes are its error value.
    pub const ERROR: i32 = 1;
    /// R unwound on an interrupt: the stop context says why.
    pub const STOPPED: i32 = 2;
}

/// Per-sandbox limits and mounts.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Cap on linear memory, in bytes.
    pub memory_bytes: usize,
    /// Deadline of each evaluation.
    pub timeout: Option<Duration>,
    /// Cap on captured output per evaluation, in bytes.
    pub output_bytes: usize,
    /// Cap on bytes stored in the private `/tmp` and home.
    pub scratch_bytes: u64,
    /// Host directories the guest may see.
    pub mounts: Vec<MountSpec>,
    /// Compiled packages, checked against their manifests when a sandbox is
    /// made and mounted read-only at [`crate::packages::LIBRARY`].
    pub packages: Arc<PackageSet>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            memory_bytes: 1 << 30,
            timeout: None,
            output_bytes: 16 << 20,
            scratch_bytes: 256 << 20,
            mounts: Vec::new(),
            packages: Arc::default(),
        }
    }
}

impl SandboxConfig {
    /// Refuse a bad mount (overlapping, relative, missing host directory)
    /// now rather than when the first sandbox is built.
    pub fn check_mounts(&self) -> Result<(), crate::vfs::VfsError> {
        crate::vfs::check_mounts(HOME, &self.all_mounts())
    }

    /// The configured mounts plus the package trees.
    fn all_mounts(&self) -> Vec<MountSpec> {
        let mut m = self.mounts.clone();
        m.extend(self.packages.mounts());
        m
    }
}

/// What went wrong with an evaluation, when it is not an ordinary R error.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A limit stopped the evaluation.
    #[error("{limit} reached")]
    Limit { limit: Limit, output: Vec<Chunk> },
    /// R left wasm abnormally (trap, `q()`, abort); the sandbox was rebuilt
    /// from its pristine state.
    #[error("the R session ended: {message}")]
    Crashed { message: String, output: Vec<Chunk> },
    /// A problem of the host side (assets, cache, configuration).
    #[error(transparent)]
    Host(anyhow::Error),
}

impl From<wasmtime::Error> for SandboxError {
    fn from(e: wasmtime::Error) -> Self {
        SandboxError::Host(e.into())
    }
}

/// Result of evaluating R source text.
#[derive(Debug)]
pub struct EvalResult {
    /// false when R signalled an error (its message is in the output).
    pub ok: bool,
    pub output: Vec<Chunk>,
}

/// Result of a serialized task.
#[derive(Debug)]
pub enum TaskOutcome {
    /// `serialize()` of the value.
    Value(Vec<u8>),
    /// `serialize()` of a `hakoError`/`errorValue` object.
    Error(Vec<u8>),
}

#[derive(Debug)]
pub struct TaskResult {
    pub outcome: TaskOutcome,
    pub output: Vec<Chunk>,
}

/// Stops the evaluation running in a sandbox, from any thread.
#[derive(Clone)]
pub struct InterruptHandle(Arc<Interrupt>);

impl InterruptHandle {
    pub fn interrupt(&self) {
        self.0.request();
    }
}

/// Process-wide: the engine, compiled modules, the read-only R tree and the
/// pristine snapshot.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    loader: Arc<Loader>,
    image: Arc<RoImage>,
    pristine: Arc<Pristine>,
}

impl Runtime {
    /// Open the runtime on verified assets. Boots R and persists the pristine
    /// snapshot the first time; later processes start from it.
    pub fn new(assets: &hako_assets::Assets, cache_dir: &Path) -> Result<Runtime> {
        let engine = HakoEngine::new(cache_dir)?;
        start_epoch_ticker(&engine);
        let sums = read_sums(assets.dir())?;
        let mut linker: Linker<StoreData> = Linker::new(engine.engine());
        abi::add_to_linker(&mut linker)?;
        let loader = Arc::new(Loader::new(
            engine.clone(),
            linker,
            assets.dir().to_path_buf(),
            sums,
        ));
        let image = RoImage::load(&assets.rootfs()).context("loading the R tree")?;
        let key = {
            let mut h = Sha256::new();
            h.update(engine.fingerprint());
            h.update(assets.id());
            h.update(BOOT_VERSION.to_le_bytes());
            h.update(include_str!("guest.R"));
            for e in GUEST_ENV {
                h.update(e);
            }
            hex::encode(&h.finalize()[..16])
        };
        let dir = cache_dir.join("pristine").join(key);
        let pristine = match Pristine::load(&dir) {
            Ok(p) => p,
            Err(_) => {
                // One process boots; a concurrent one waits and uses its work.
                let _lock = crate::engine::lock_file(&dir.with_extension("lock"))?;
                match Pristine::load(&dir) {
                    Ok(p) => p,
                    Err(_) => crate::stack::with_stack(|| boot(&loader, &image, &dir))
                        .context("starting a thread to boot R on")?
                        .context("booting R")?,
                }
            }
        };
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                loader,
                image,
                pristine: Arc::new(pristine),
            }),
        })
    }

    /// A fresh sandbox in the pristine state.
    pub fn sandbox(&self, config: SandboxConfig) -> Result<Sandbox> {
        // Once per sandbox, not per rebuild: the trees are mounted read-only
        // and each side module is checked again by hash when it is loaded.
        config.packages.verify()?;
        let interrupt = Arc::new(Interrupt::default());
        let base = self.inner.pristine.clone();
        let (store, api, mem) = instantiate(&self.inner, &base, &config, interrupt.clone())?;
        Ok(Sandbox {
            rt: self.clone(),
            base,
            config,
            store,
            api,
            mem,
            interrupt,
            poisoned: false,
        })
    }
}

/// One R, isolated: evaluate, reset, evaluate again.
pub struct Sandbox {
    rt: Runtime,
    /// What a reset returns to: the runtime's pristine state, or this
    /// sandbox's own after [`Sandbox::rebase`].
    base: Arc<Pristine>,
    config: SandboxConfig,
    store: Store<StoreData>,
    api: RApi,
    mem: Arc<MemCtl>,
    interrupt: Arc<Interrupt>,
    /// Set after a trap: the instance is not trusted and is rebuilt.
    poisoned: bool,
}

impl Sandbox {
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle(self.interrupt.clone())
    }

    /// Change the per-evaluation deadline.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.config.timeout = timeout;
    }

    /// Evaluate R source text in the global environment, printing visible
    /// values as R's REPL would.
    pub fn eval(&mut self, code: &str) -> Result<EvalResult, SandboxError> {
        crate::stack::with_stack(|| self.eval_here(code)).map_err(host_thread_error)?
    }

    fn eval_here(&mut self, code: &str) -> Result<EvalResult, SandboxError> {
        self.begin()?;
        let eval_fn = self.rt.inner.pristine.state.eval_fn;
        let r = (|| -> Result<i32> {
            let s = &mut self.store;
            let arg = self.api.string(s, code)?;
            self.api.protect(s, arg)?;
            let seed = self.api.raw_vector(s, &host_seed()?)?;
            self.api.protect(s, seed)?;
            let call = self.api.lang3(s, eval_fn, arg, seed)?;
            self.api.protect(s, call)?;
            let genv = self.api.global_env(s)?;
            let v = self.api.try_eval(s, call, genv)?;
            self.api.unprotect(s, 3)?;
            Ok(match v {
                Some(v) => self.api.as_integer(s, v)?,
                // R unwound to the top level: an interrupt nobody caught, or
                // an error outside the helpers' handlers.
                None if s.data().stop.reason.is_some() => status::STOPPED,
                None => status::ERROR,
            })
        })();
        let status = self.finish(r)?;
        let limit = self.limit_hit(status);
        let output = self.store.data_mut().output.take();
        match limit {
            Some(limit) => Err(SandboxError::Limit { limit, output }),
            None => Ok(EvalResult {
                ok: status == status::VALUE,
                output,
            }),
        }
    }

    /// Evaluate a task given as `serialize()`d bytes: `list(expr, args)`, or
    /// the R package's `list(packages = , task = )` with `task` a serialized
    /// `list(expr, args, globals = , seed = )` (see PROTOCOL.md).
    pub fn eval_task(&mut self, task: &[u8]) -> Result<TaskResult, SandboxError> {
        crate::stack::with_stack(|| self.eval_task_here(task)).map_err(host_thread_error)?
    }

    fn eval_task_here(&mut self, task: &[u8]) -> Result<TaskResult, SandboxError> {
        self.begin()?;
        let task_fn = self.rt.inner.pristine.state.task_fn;
        let r = (|| -> Result<(i32, Vec<u8>)> {
            let s = &mut self.store;
            let arg = self.api.raw_vector(s, task)?;
            self.api.protect(s, arg)?;
            let seed = self.api.raw_vector(s, &host_seed()?)?;
            self.api.protect(s, seed)?;
            let call = self.api.lang3(s, task_fn, arg, seed)?;
            self.api.protect(s, call)?;
            let genv = self.api.global_env(s)?;
            let mut v = self.api.try_eval(s, call, genv)?;
            if v.is_none() && s.data().stop.reason.is_none() {
                // The task aborted on an error nobody caught: the guest
                // recorded it; ask for its value.
                let state = &self.rt.inner.pristine.state;
                let call = self.api.lang2(s, state.task_error_fn, arg)?;
                self.api.protect(s, call)?;
                v = self.api.try_eval(s, call, genv)?;
                self.api.unprotect(s, 1)?;
            }
            let out = match v {
                Some(list) => {
                    let status = self.api.vector_elt(s, list, 0)?;
                    let status = self.api.as_integer(s, status)?;
                    let raw = self.api.vector_elt(s, list, 1)?;
                    (status, self.api.raw_bytes(s, raw)?)
                }
                None if s.data().stop.reason.is_some() => (status::STOPPED, Vec::new()),
                None => bail!("the task wrapper failed"),
            };
            self.api.unprotect(s, 3)?;
            Ok(out)
        })();
        let (status, bytes) = match r {
            Ok((status, bytes)) => {
                self.finish(Ok(status))?;
                (status, bytes)
            }
            Err(e) => {
                self.finish(Err(e))?;
                unreachable!("finish turns every error into a SandboxError")
            }
        };
        let limit = self.limit_hit(status);
        let output = self.store.data_mut().output.take();
        if let Some(limit) = limit {
            return Err(SandboxError::Limit { limit, output });
        }
        let outcome = if status == status::VALUE {
            TaskOutcome::Value(bytes)
        } else {
            TaskOutcome::Error(bytes)
        };
        Ok(TaskResult { outcome, output })
    }

    /// The guest's linear memory now, in bytes: after a task and before its
    /// reset, the most that task used (wasm memory only grows).
    pub fn memory_size(&self) -> usize {
        self.mem.size()
    }

    /// Give the memory's pages back to the kernel, for a daemon left idle.
    /// Only right after a reset: the memory then reads as its base image
    /// (and zeros above it) again, which the next task faults back in.
    pub fn release_memory(&self) -> Result<()> {
        self.mem.release().context("releasing memory")
    }

    /// Back to the base state (pristine, or the one [`Sandbox::rebase`]
    /// kept): memory, linker, files, descriptors.
    pub fn reset(&mut self) -> Result<()> {
        let base = self.base.clone();
        let p = &base.state;
        let structural = {
            let l = &self.store.data().linking;
            l.libs.len() != p.link.libs.len()
                || l.appended.len() != p.link.appended.len()
                || l.got.len() != p.link.got.len()
        };
        if self.poisoned || structural || self.table_len()? != p.link.table_len {
            return self.rebuild();
        }
        self.mem.reset().context("resetting memory")?;
        let sp = self
            .store
            .data()
            .linking
            .stack_pointer
            .context("no stack pointer")?;
        sp.set(&mut self.store, Val::I32(p.link.stack_pointer as i32))?;
        let h = self.store.data_mut();
        h.vfs.restore(&p.vfs);
        h.output.take();
        Ok(())
    }

    fn table_len(&mut self) -> Result<u64> {
        let t = self.store.data().linking.table.context("no table")?;
        Ok(t.size(&mut self.store))
    }

    /// A new instance in the base state. Should the sandbox's own base not
    /// re-create, it falls back to the runtime's pristine state
    /// ([`Sandbox::rebased`] then says false: the caller re-applies its code).
    fn rebuild(&mut self) -> Result<()> {
        let made = instantiate(
            &self.rt.inner,
            &self.base,
            &self.config,
            self.interrupt.clone(),
        );
        let (store, api, mem) = match made {
            Ok(m) => m,
            Err(_) if self.rebased() => {
                self.base = self.rt.inner.pristine.clone();
                instantiate(
                    &self.rt.inner,
                    &self.base,
                    &self.config,
                    self.interrupt.clone(),
                )?
            }
            Err(e) => return Err(e),
        };
        self.store = store;
        self.api = api;
        self.mem = mem;
        self.poisoned = false;
        Ok(())
    }

    /// Make the current state the one every later reset returns to (what
    /// `everywhere()` set up stays; a task's changes after it do not).
    /// Between evaluations only. The state is copied into an in-memory
    /// image and the instance re-created on it, so a reset costs what the
    /// next task touches, as from the pristine state; the previous base is
    /// dropped (the runtime's pristine state stays, shared).
    pub fn rebase(&mut self) -> Result<()> {
        if self.poisoned {
            bail!("the sandbox was stopped by a trap: its state is not kept");
        }
        // No RNG state in a base, as at boot: each task after it is seeded
        // afresh (or by its own seed), not from one stream they all share.
        let dropped = self.eval(
            "if (exists('.Random.seed', envir = globalenv(), inherits = FALSE)) \
             rm('.Random.seed', envir = globalenv())",
        );
        if !matches!(dropped, Ok(EvalResult { ok: true, .. })) {
            bail!("could not drop the RNG state before keeping the sandbox's state");
        }
        let link = dylink::capture(&mut self.store.as_context_mut())?;
        let vfs = self.store.data().vfs.snapshot();
        // Its own base, still the memory's size: written in place.
        if self.rebased() && self.mem.image_len() == self.mem.size() {
            if let Some(base) = Arc::get_mut(&mut self.base) {
                if let Err(e) = self.mem.commit() {
                    // The image may be half written: not a base any more.
                    self.unbase();
                    return Err(e).context("writing the sandbox's base");
                }
                base.state.link = link;
                base.state.vfs = vfs;
                return Ok(());
            }
        }
        let memory = self.store.data().memory.context("no memory")?;
        let p = &self.base.state;
        let state = PristineState {
            link,
            vfs,
            eval_fn: p.eval_fn,
            task_fn: p.task_fn,
            task_error_fn: p.task_error_fn,
            mem_len: 0,
            mem_min_pages: p.mem_min_pages,
            mem_sha256: String::new(),
        };
        let base = Arc::new(Pristine::in_memory(memory.data(&self.store), state)?);
        // Not rebuild(): a base that does not re-create is an error here,
        // not a silent fall back to the pristine state.
        match instantiate(&self.rt.inner, &base, &self.config, self.interrupt.clone()) {
            Ok((store, api, mem)) => {
                self.base = base;
                self.store = store;
                self.api = api;
                self.mem = mem;
                self.poisoned = false;
                Ok(())
            }
            Err(e) => {
                // Back to the old base at the next reset.
                self.poisoned = true;
                Err(e.context("re-creating the sandbox on its new base"))
            }
        }
    }

    /// Whether a reset returns to a state of this sandbox's own (set by
    /// [`Sandbox::rebase`]) rather than the runtime's pristine one.
    pub fn rebased(&self) -> bool {
        !Arc::ptr_eq(&self.base, &self.rt.inner.pristine)
    }

    /// Forget the state [`Sandbox::rebase`] kept: the next reset returns to
    /// the runtime's pristine state.
    pub fn unbase(&mut self) {
        if self.rebased() {
            self.base = self.rt.inner.pristine.clone();
            self.poisoned = true;
        }
    }

    fn begin(&mut self) -> Result<(), SandboxError> {
        if self.poisoned {
            self.rebuild()?;
        }
        let timeout = self.config.timeout;
        let h = self.store.data_mut();
        h.output.take();
        h.output.set_cap(self.config.output_bytes);
        h.limiter.hit = false;
        h.limiter.max_bytes = self.config.memory_bytes;
        h.stop.begin(timeout);
        self.store.set_epoch_deadline(1);
        // C's rand() makes R's tempfile() names, and its state is in the
        // pristine image: seeded per evaluation, sandboxes sharing an rw
        // mount do not all try the same names. (tempdir() is made at boot
        // and the same everywhere; each sandbox's /tmp is private.)
        let main = self
            .store
            .data()
            .linking
            .main()
            .context("no main instance")?;
        let srand = main.get_typed_func::<u32, ()>(&mut self.store, "srand")?;
        srand.call(&mut self.store, u32::from_le_bytes(host_seed()?))?;
        Ok(())
    }

    /// Turn a host-side call result into a status, classifying traps.
    fn finish(&mut self, r: Result<i32>) -> Result<i32, SandboxError> {
        match r {
            Ok(status) => Ok(status),
            Err(e) => {
                self.poisoned = true;
                let _ = self.store.take_pending_exception();
                let output = self.store.data_mut().output.take();
                let h = self.store.data();
                if let Some(limit) = h.stop.reason {
                    return Err(SandboxError::Limit { limit, output });
                }
                if let Some(GuestTrap::Exit(code)) = e.downcast_ref::<GuestTrap>() {
                    return Err(SandboxError::Crashed {
                        message: format!("R called quit() with status {code}"),
                        output,
                    });
                }
                if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
                    return Err(SandboxError::Limit {
                        limit: Limit::Time,
                        output,
                    });
                }
                // A trap's wasm backtrace (thousands of frames on a stack
                // overflow) says nothing to the user: name the trap.
                let message = match e.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::StackOverflow) => {
                        "R ran out of stack: the evaluation nested too deeply \
                         (wasm trap: call stack exhausted)"
                            .to_string()
                    }
                    Some(trap) => trap.to_string(),
                    None => format!("{e:#}"),
                };
                Err(SandboxError::Crashed { message, output })
            }
        }
    }

    /// The limit that decided this evaluation's outcome, if any.
    fn limit_hit(&self, status: i32) -> Option<Limit> {
        let h = self.store.data();
        if h.output.exceeded() {
            return Some(Limit::Output);
        }
        if status == status::STOPPED {
            return Some(h.stop.reason.unwrap_or(Limit::Interrupted));
        }
        if status == status::ERROR && h.limiter.hit {
            return Some(Limit::Memory);
        }
        None
    }
}

/// Seed material for a sandbox without RNG state, from the host's CSPRNG:
/// a non-negative little-endian i32, since R reads 0x80000000 as NA and
/// `set.seed(NA)` is an error.
fn host_seed() -> Result<[u8; 4]> {
    let mut b = [0u8; 4];
    crate::vfs::fill_random(&mut b).map_err(|e| format_err!("no host randomness: {e:?}"))?;
    b[3] &= 0x7f;
    Ok(b)
}

fn host_thread_error(e: std::io::Error) -> SandboxError {
    SandboxError::Host(anyhow::Error::new(e).context("starting a thread to run the sandbox on"))
}

fn read_sums(dir: &Path) -> Result<HashMap<String, String>> {
    let text =
        std::fs::read_to_string(dir.join("manifest.json")).context("reading the asset manifest")?;
    let v: serde_json::Value = serde_json::from_str(&text).context("parsing the asset manifest")?;
    let files = v
        .get("files")
        .and_then(|f| f.as_object())
        .context("manifest has no files")?;
    Ok(files
        .iter()
        .filter_map(|(k, f)| Some((k.clone(), f.get("sha256")?.as_str()?.to_string())))
        .collect())
}

fn start_epoch_ticker(engine: &HakoEngine) {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let engine = engine.engine().clone();
        std::thread::Builder::new()
            .name("hako-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                engine.increment_epoch();
            })
            .expect("spawning the epoch thread");
    });
}

fn new_store(
    rt_loader: &Arc<Loader>,
    vfs: Vfs,
    memory_bytes: usize,
    output_bytes: usize,
    interrupt: Arc<Interrupt>,
) -> Store<StoreData> {
    let data = StoreData {
        memory: None,
        vfs,
        output: Output::new(output_bytes),
        linking: Linking::new(rt_loader.clone()),
        env: GUEST_ENV.iter().map(|s| s.to_string()).collect(),
        limiter: MemoryLimiter {
            max_bytes: memory_bytes,
            hit: false,
        },
        stop: Stop::new(interrupt),
    };
    let mut store = Store::new(rt_loader.engine.engine(), data);
    store.limiter(|h| &mut h.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        if ctx.data_mut().stop.backstop() {
            return Err(wasmtime::Trap::Interrupt.into());
        }
        Ok(UpdateDeadline::Continue(1))
    });
    store
}

fn vfs_for(image: &Arc<RoImage>, config: &SandboxConfig) -> Result<Vfs> {
    Vfs::new(VfsConfig {
        image: image.clone(),
        mounts: config.all_mounts(),
        home: HOME.to_string(),
        scratch_bytes: config.scratch_bytes,
        max_fds: 1024,
    })
    .map_err(|e| format_err!("{e}"))
}

/// A store in the pristine state.
fn instantiate(
    rt: &RuntimeInner,
    base: &Pristine,
    config: &SandboxConfig,
    interrupt: Arc<Interrupt>,
) -> Result<(Store<StoreData>, RApi, Arc<MemCtl>)> {
    let vfs = vfs_for(&rt.image, config)?;
    let mut store = new_store(
        &rt.loader,
        vfs,
        config.memory_bytes.max(base.state.mem_len),
        config.output_bytes,
        interrupt,
    );
    if !config.packages.is_empty() {
        store.data_mut().linking.packages = Arc::new(config.packages.modules());
    }
    let p = base;
    memory::set_pending_image(Some(p.image.clone()));
    let restored = dylink::restore(&mut store.as_context_mut(), &p.state.link);
    memory::set_pending_image(None);
    restored.context("re-creating the pristine instance")?;
    let mem = memory::take_last_created().context("pristine memory was not created")?;
    if mem.image_len() != p.image.len {
        bail!("pristine memory was not backed by its image");
    }
    // Instantiation wrote the modules' data segments over the image; drop
    // those copies so the sandbox starts with no private pages.
    mem.release().context("mapping the pristine image")?;
    store.data_mut().vfs.restore(&p.state.vfs);
    store.data_mut().limiter.max_bytes = config.memory_bytes;
    let main = store.data().linking.main().context("no main instance")?;
    let api = RApi::bind(&mut store, main)?;
    store.data_mut().stop.r_interrupts_pending = Some(api.interrupts_pending);
    Ok((store, api, mem))
}

/// Start R from scratch and persist its pristine state.
fn boot(loader: &Arc<Loader>, image: &Arc<RoImage>, dir: &Path) -> Result<Pristine> {
    let config = SandboxConfig::default();
    let vfs = vfs_for(image, &config)?;
    let mut store = new_store(
        loader,
        vfs,
        2 << 30,
        1 << 20,
        Arc::new(Interrupt::default()),
    );
    store.set_epoch_deadline(u64::MAX / 2);
    let main = loader.load("R.wasm")?;
    let inst = dylink::instantiate_main(&mut store.as_context_mut(), &main)?;
    let r = (|| -> Result<[Sexp; 3]> {
        inst.get_typed_func::<(), ()>(&mut store, "__wasm_call_ctors")?
            .call(&mut store, ())?;
        dylink::load_library(
            &mut store.as_context_mut(),
            "libRblas.so",
            LoadFlags { global: true },
            &mut Vec::new(),
        )?;
        let api = RApi::bind(&mut store, inst)?;
        // argv for Rf_initialize_R, in guest memory.
        let malloc = inst.get_typed_func::<u32, u32>(&mut store, "malloc")?;
        let memory = store.data().memory.context("no memory")?;
        let argv = malloc.call(&mut store, 4 * BOOT_ARGS.len() as u32)?;
        for (i, a) in BOOT_ARGS.iter().enumerate() {
            let p = malloc.call(&mut store, a.len() as u32 + 1)?;
            memory.write(&mut store, p as usize, a.as_bytes())?;
            memory.write(&mut store, p as usize + a.len(), &[0])?;
            memory.write(&mut store, argv as usize + 4 * i, &p.to_le_bytes())?;
        }
        let stack_top = move_shadow_stack(&mut store, inst)?;
        inst.get_typed_func::<(i32, u32), i32>(&mut store, "Rf_initialize_R")?
            .call(&mut store, (BOOT_ARGS.len() as i32, argv))?;
        set_c_stack(&mut store, inst, stack_top)?;
        inst.get_typed_func::<(), ()>(&mut store, "setup_Rmainloop")?
            .call(&mut store, ())?;
        store.data_mut().stop.r_interrupts_pending = Some(api.interrupts_pending);
        // The guest helpers: eval(str2expression(code), globalenv()).
        let code = api.string(&mut store, include_str!("guest.R"))?;
        api.protect(&mut store, code)?;
        let s2e = api.install(&mut store, "str2expression")?;
        let parse = api.lang2(&mut store, s2e, code)?;
        api.protect(&mut store, parse)?;
        let eval = api.install(&mut store, "eval")?;
        let genv = api.global_env(&mut store)?;
        let call = api.lang3(&mut store, eval, parse, genv)?;
        api.protect(&mut store, call)?;
        let Some(henv) = api.try_eval(&mut store, call, genv)? else {
            let out = store.data_mut().output.take();
            let text: Vec<u8> = out.into_iter().flat_map(|c| c.bytes).collect();
            bail!(
                "the guest helpers failed to load: {}",
                String::from_utf8_lossy(&text)
            );
        };
        api.preserve(&mut store, henv)?;
        api.unprotect(&mut store, 3)?;
        let mut fns = [0; 3];
        for (i, name) in ["eval_text", "task", "task_error"].iter().enumerate() {
            let sym = api.install(&mut store, name)?;
            let f = api.find_var(&mut store, sym, henv)?;
            api.preserve(&mut store, f)?;
            fns[i] = f;
        }
        Ok(fns)
    })();
    let [eval_fn, task_fn, task_error_fn] = match r {
        Ok(v) => v,
        Err(e) => {
            let out = store.data_mut().output.take();
            let text: Vec<u8> = out.into_iter().flat_map(|c| c.bytes).collect();
            return Err(e.context(format!("R's output: {}", String::from_utf8_lossy(&text))));
        }
    };
    let link = dylink::capture(&mut store.as_context_mut())?;
    let vfs = store.data().vfs.snapshot();
    let memory = store.data().memory.context("no memory")?;
    let mem_min_pages = memory.ty(&store).minimum();
    let bytes = memory.data(&store).to_vec();
    let state = PristineState {
        link,
        vfs,
        eval_fn,
        task_fn,
        task_error_fn,
        mem_len: 0,
        mem_min_pages,
        mem_sha256: String::new(),
    };
    Pristine::save(dir, &bytes, state)
}

/// Shadow stack (C's stack in linear memory) R runs on.
///
/// R.wasm links a 1 MiB shadow stack with R's static data right below it.
/// C code that recurses without R's stack check (unserialize, deparse of
/// deeply nested objects) would run off its end and silently overwrite that
/// data. On a stack as large as wasmtime's native allowance, the native
/// stack runs out first: a clean trap.
pub const SHADOW_STACK: u32 = crate::engine::MAX_WASM_STACK as u32;

/// R's C-stack limit (checked in eval, serialize, ...): half the shadow
/// stack, so R-level recursion ends as R's error ("evaluation nested too
/// deeply", "C stack usage ... too close to the limit") well before the
/// native allowance traps (measured: method-dispatch recursion reaches the
/// limit at ~4 MB of shadow stack with native stack to spare), while
/// objects nested 1e4 deep still serialize as in native R.
const R_C_STACK_LIMIT: u32 = SHADOW_STACK / 2;

/// Point `__stack_pointer` at a fresh [`SHADOW_STACK`] region from R's heap
/// (at boot, with no C frames live); returns its top.
fn move_shadow_stack(store: &mut Store<StoreData>, inst: wasmtime::Instance) -> Result<u32> {
    let malloc = inst.get_typed_func::<u32, u32>(&mut *store, "malloc")?;
    let region = malloc.call(&mut *store, SHADOW_STACK)?;
    if region == 0 {
        bail!("no memory for R's stack");
    }
    let top = (region + SHADOW_STACK) & !15;
    let sp = store
        .data()
        .linking
        .stack_pointer
        .context("no stack pointer")?;
    sp.set(&mut *store, Val::I32(top as i32))?;
    Ok(top)
}

/// Give R's C-stack check the stack it runs on (from `top`, down
/// [`R_C_STACK_LIMIT`]), so deep R recursion is an R error instead of
/// running off the stack.
fn set_c_stack(store: &mut Store<StoreData>, inst: wasmtime::Instance, top: u32) -> Result<()> {
    let base = inst
        .get_typed_func::<(), u32>(&mut *store, "emscripten_stack_get_base")?
        .call(&mut *store, ())?;
    let end = inst
        .get_typed_func::<(), u32>(&mut *store, "emscripten_stack_get_end")?
        .call(&mut *store, ())?;
    let memory = store.data().memory.context("no memory")?;
    let addr = |store: &mut Store<StoreData>, name: &str| -> Result<usize> {
        Ok(inst
            .get_global(&mut *store, name)
            .with_context(|| format!("R.wasm export {name}"))?
            .get(&mut *store)
            .i32()
            .context("global type")? as u32 as usize)
    };
    let limit = R_C_STACK_LIMIT.max(base.saturating_sub(end).saturating_sub(64 << 10));
    let start_addr = addr(store, "R_CStackStart")?;
    let limit_addr = addr(store, "R_CStackLimit")?;
    let dir_addr = addr(store, "R_CStackDir")?;
    memory.write(&mut *store, start_addr, &top.to_le_bytes())?;
    memory.write(&mut *store, limit_addr, &limit.to_le_bytes())?;
    memory.write(&mut *store, dir_addr, &1i32.to_le_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Sandboxes move to worker threads; the runtime is shared between them.
    #[test]
    fn sandbox_is_send_and_runtime_is_shared() {
        fn send<T: Send>() {}
        fn shared<T: Send + Sync>() {}
        send::<super::Sandbox>();
        shared::<super::Runtime>();
        shared::<super::InterruptHandle>();
    }

    /// R reads the seed as an integer: never NA (i32::MIN) or negative.
    #[test]
    fn host_seeds_are_valid_r_integers() {
        for _ in 0..1000 {
            assert!(i32::from_le_bytes(super::host_seed().unwrap()) >= 0);
        }
    }
}
