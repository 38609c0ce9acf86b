//! Reading wasm modules: legacy-EH detection, exnref validation, and the
//! files Emscripten embedded in R.wasm's data segments.

use std::path::{Component, Path};

use wasmparser::{DataKind, Operator, Parser, Payload, TypeRef, Validator, WasmFeatures};

use crate::error::AssetError;

/// Import through which Emscripten's ctors register the embedded files.
const EMBED_IMPORT: (&str, &str) = ("env", "_emscripten_fs_load_embedded_files");
/// Upper bound on embedded-file records, so a corrupt table cannot loop forever.
const MAX_EMBEDDED_FILES: usize = 100_000;

/// Whether `bytes` starts like a core wasm module (`\0asm`, version 1).
pub fn is_wasm(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm\x01\0\0\0")
}

/// The features the runtime's wasmtime accepts: wasm 2.0 plus exnref-style
/// exceptions, and no legacy `try`/`catch`.
pub fn exnref_features() -> WasmFeatures {
    (WasmFeatures::WASM2 | WasmFeatures::EXCEPTIONS) - WasmFeatures::LEGACY_EXCEPTIONS
}

/// A parser that can decode every operator, legacy ones included.
fn permissive_parser() -> Parser {
    let mut p = Parser::new(0);
    p.set_features(WasmFeatures::all());
    p
}

fn wasm_err(module: &str) -> impl Fn(wasmparser::BinaryReaderError) -> AssetError + '_ {
    move |e| AssetError::Wasm {
        module: module.to_string(),
        detail: e.to_string(),
    }
}

/// Whether any function uses legacy exception handling (`try`, `catch`,
/// `catch_all`, `delegate`, `rethrow`), which wasmtime does not run.
pub fn has_legacy_eh(module: &str, bytes: &[u8]) -> Result<bool, AssetError> {
    let err = wasm_err(module);
    for payload in permissive_parser().parse_all(bytes) {
        if let Payload::CodeSectionEntry(body) = payload.map_err(&err)? {
            let mut ops = body.get_operators_reader().map_err(&err)?;
            while !ops.eof() {
                if matches!(
                    ops.read().map_err(&err)?,
                    Operator::Try { .. }
                        | Operator::Catch { .. }
                        | Operator::CatchAll
                        | Operator::Delegate { .. }
                        | Operator::Rethrow { .. }
                ) {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// Validates `bytes` with [`exnref_features`]; the error text comes from wasmparser.
pub fn validate_exnref(bytes: &[u8]) -> Result<(), String> {
    Validator::new_with_features(exnref_features())
        .validate_all(bytes)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A file Emscripten packed into the module, at its absolute guest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedFile {
    pub path: String,
    pub data: Vec<u8>,
}

/// Recovers the files Emscripten's `--embed-file` put into a module.
///
/// The ctors call `_emscripten_fs_load_embedded_files(ADDR)` once, with ADDR
/// an `i32.const`. ADDR points (in the memory the active data segments
/// initialise) at records `{u32 name_ptr, u32 size, u32 data_ptr}`, read
/// do-while until the next record's `name_ptr` is 0.
pub fn embedded_files(bytes: &[u8]) -> Result<Vec<EmbeddedFile>, AssetError> {
    let err = |detail: String| AssetError::EmbeddedFiles { detail };
    let perr = |e: wasmparser::BinaryReaderError| err(e.to_string());

    let mut imported_funcs = 0u32;
    let mut target: Option<u32> = None;
    let mut sites: Vec<u32> = Vec::new();
    let mut segments: Vec<(u32, &[u8])> = Vec::new();

    for payload in permissive_parser().parse_all(bytes) {
        match payload.map_err(perr)? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(perr)?;
                    if let TypeRef::Func(_) | TypeRef::FuncExact(_) = import.ty {
                        if (import.module, import.name) == EMBED_IMPORT {
                            target = Some(imported_funcs);
                        }
                        imported_funcs += 1;
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let Some(target) = target else { continue };
                let mut ops = body.get_operators_reader().map_err(perr)?;
                let mut last_const: Option<i32> = None;
                while !ops.eof() {
                    match ops.read().map_err(perr)? {
                        Operator::I32Const { value } => {
                            last_const = Some(value);
                            continue;
                        }
                        Operator::Call { function_index } if function_index == target => {
                            if let Some(addr) = last_const {
                                sites.push(addr as u32);
                            }
                        }
                        _ => {}
                    }
                    last_const = None;
                }
            }
            Payload::DataSection(reader) => {
                for data in reader {
                    let data = data.map_err(perr)?;
                    if let DataKind::Active {
                        memory_index: 0,
                        offset_expr,
                    } = data.kind
                    {
                        let mut ops = offset_expr.get_operators_reader();
                        match (ops.read().map_err(perr)?, ops.read().map_err(perr)?) {
                            (Operator::I32Const { value }, Operator::End) => {
                                segments.push((value as u32, data.data))
                            }
                            (op, _) => {
                                return Err(err(format!(
                                    "data segment offset is {op:?}, not a constant; \
                                     only non-PIC main modules are supported"
                                )))
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }

    if target.is_none() {
        return Err(err(format!(
            "the module does not import {}.{}",
            EMBED_IMPORT.0, EMBED_IMPORT.1
        )));
    }
    let addr = match sites.as_slice() {
        [one] => *one,
        _ => {
            return Err(err(format!(
                "expected exactly one `i32.const; call {}`, found {}",
                EMBED_IMPORT.1,
                sites.len()
            )))
        }
    };

    let mem = SparseMemory::new(segments);
    let mut files = Vec::new();
    let mut rec = u64::from(addr);
    loop {
        if files.len() >= MAX_EMBEDDED_FILES {
            return Err(err(format!("more than {MAX_EMBEDDED_FILES} records")));
        }
        let name_ptr = mem.u32_at(rec).map_err(&err)?;
        let size = mem.u32_at(rec + 4).map_err(&err)?;
        let data_ptr = mem.u32_at(rec + 8).map_err(&err)?;
        let name = mem.cstr_at(u64::from(name_ptr)).map_err(&err)?;
        if !is_safe_absolute(&name) {
            return Err(err(format!(
                "record at {rec} names an unsafe path {name:?}"
            )));
        }
        let data = mem
            .read(u64::from(data_ptr), u64::from(size))
            .map_err(&err)?;
        files.push(EmbeddedFile { path: name, data });
        rec += 12;
        if mem.u32_at(rec).map_err(&err)? == 0 {
            break;
        }
    }
    Ok(files)
}

/// An absolute path of normal components: `/usr/lib/R/etc/Renviron`, never `..`.
pub(crate) fn is_safe_absolute(path: &str) -> bool {
    let mut comps = Path::new(path).components();
    path.starts_with('/')
        && !path.contains('\0')
        && comps.next() == Some(Component::RootDir)
        && comps.clone().next().is_some()
        && comps.all(|c| matches!(c, Component::Normal(_)))
}

/// Linear memory as the active data segments initialise it, without
/// materialising the whole range: reads copy from the overlapping segments
/// (later segments win, as in instantiation) over zeros.
struct SparseMemory<'a> {
    segments: Vec<(u32, &'a [u8])>,
    end: u64,
}

impl<'a> SparseMemory<'a> {
    fn new(segments: Vec<(u32, &'a [u8])>) -> Self {
        let end = segments
            .iter()
            .map(|(o, d)| u64::from(*o) + d.len() as u64)
            .max()
            .unwrap_or(0);
        SparseMemory { segments, end }
    }

    fn read(&self, start: u64, len: u64) -> Result<Vec<u8>, String> {
        let stop = start + len;
        if stop > self.end {
            return Err(format!(
                "read of {len} bytes at {start} goes past the initialised data (ends at {})",
                self.end
            ));
        }
        let mut out = vec![0u8; len as usize];
        for &(off, data) in &self.segments {
            let (s_start, s_stop) = (u64::from(off), u64::from(off) + data.len() as u64);
            let (lo, hi) = (start.max(s_start), stop.min(s_stop));
            if lo < hi {
                out[(lo - start) as usize..(hi - start) as usize]
                    .copy_from_slice(&data[(lo - s_start) as usize..(hi - s_start) as usize]);
            }
        }
        Ok(out)
    }

    fn u32_at(&self, addr: u64) -> Result<u32, String> {
        let b = self.read(addr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated UTF-8 string of at most 4 KiB.
    fn cstr_at(&self, addr: u64) -> Result<String, String> {
        const CHUNK: u64 = 256;
        const MAX: usize = 4096;
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < MAX {
            let avail = self.end.saturating_sub(at).min(CHUNK);
            if avail == 0 {
                break;
            }
            let chunk = self.read(at, avail)?;
            if let Some(nul) = chunk.iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return String::from_utf8(out)
                    .map_err(|_| format!("file name at {addr} is not UTF-8"));
            }
            out.extend_from_slice(&chunk);
            at += avail;
        }
        Err(format!("file name at {addr} is not NUL-terminated"))
    }
}
