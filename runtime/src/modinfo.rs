//! What the dynamic linker needs to know about a module before instantiating
//! it: its `dylink.0` section, which exports are functions, and which table
//! slots its element segments fill. Parsed once per module.

use std::collections::{HashMap, HashSet};
use wasmparser::{ElementItems, ElementKind, ExternalKind, Operator, Parser, Payload, TypeRef};
use wasmtime::error::{bail, Context, Result};

/// Emscripten's `dylink.0` custom section.
#[derive(Clone, Debug, Default)]
pub struct Dylink {
    pub mem_size: u32,
    pub mem_align: u32,
    pub table_size: u32,
    pub needed: Vec<String>,
    pub weak_imports: HashSet<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ModuleInfo {
    pub dylink: Dylink,
    /// Exported functions: name to function index.
    pub func_exports: HashMap<String, u32>,
    /// Every export name, in export order (dlsym reports this index).
    pub export_order: Vec<String>,
    /// Function index to table slot filled by an active element segment.
    /// Relative to `__table_base` where `relative` is true.
    pub elem_slots: HashMap<u32, u32>,
    pub elem_relative: bool,
}

impl ModuleInfo {
    pub fn parse(bytes: &[u8]) -> Result<ModuleInfo> {
        let mut info = ModuleInfo::default();
        let mut imported_globals: Vec<String> = Vec::new();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.context("parsing wasm module")? {
                Payload::CustomSection(c) if c.name() == "dylink.0" => {
                    info.dylink = parse_dylink(c.data()).context("parsing dylink.0")?;
                }
                Payload::ImportSection(r) => {
                    for imp in r.into_imports() {
                        let imp = imp?;
                        if let TypeRef::Global(_) = imp.ty {
                            imported_globals.push(imp.name.to_string());
                        }
                    }
                }
                Payload::ExportSection(r) => {
                    for e in r {
                        let e = e?;
                        if e.kind == ExternalKind::Func {
                            info.func_exports.insert(e.name.to_string(), e.index);
                        }
                        info.export_order.push(e.name.to_string());
                    }
                }
                Payload::ElementSection(r) => {
                    for e in r {
                        let e = e?;
                        let ElementKind::Active { offset_expr, .. } = e.kind else {
                            continue;
                        };
                        let mut base = 0u32;
                        for op in offset_expr.get_operators_reader() {
                            match op? {
                                Operator::I32Const { value } => base = value as u32,
                                Operator::GlobalGet { global_index } => {
                                    let name = imported_globals.get(global_index as usize);
                                    if name.map(String::as_str) != Some("__table_base") {
                                        bail!("element segment offset from an unexpected global");
                                    }
                                    info.elem_relative = true;
                                }
                                Operator::End => {}
                                other => bail!("unsupported element offset {other:?}"),
                            }
                        }
                        if let ElementItems::Functions(funcs) = e.items {
                            for (i, f) in funcs.into_iter().enumerate() {
                                info.elem_slots.entry(f?).or_insert(base + i as u32);
                            }
                        }
                    }
                }
                Payload::CodeSectionStart { .. } | Payload::CodeSectionEntry(_) => {}
                _ => {}
            }
        }
        Ok(info)
    }
}

fn parse_dylink(data: &[u8]) -> Result<Dylink> {
    let mut r = Reader { data, pos: 0 };
    let mut d = Dylink::default();
    while r.pos < data.len() {
        let kind = r.u8()?;
        let size = r.leb()? as usize;
        let end = r
            .pos
            .checked_add(size)
            .filter(|&e| e <= data.len())
            .context("truncated")?;
        match kind {
            1 => {
                d.mem_size = r.leb()?;
                d.mem_align = r.leb()?;
                d.table_size = r.leb()?;
                let _table_align = r.leb()?;
            }
            2 => {
                for _ in 0..r.leb()? {
                    d.needed.push(r.string()?);
                }
            }
            4 => {
                for _ in 0..r.leb()? {
                    let _module = r.string()?;
                    let name = r.string()?;
                    let flags = r.leb()?;
                    if flags & 3 == 1 {
                        d.weak_imports.insert(name);
                    }
                }
            }
            _ => {}
        }
        r.pos = end;
    }
    if d.mem_align > 16 {
        bail!("memory alignment 2^{} is not plausible", d.mem_align);
    }
    Ok(d)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8> {
        let b = *self.data.get(self.pos).context("truncated")?;
        self.pos += 1;
        Ok(b)
    }

    fn leb(&mut self) -> Result<u32> {
        let mut v: u64 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return u32::try_from(v).context("LEB128 value too large");
            }
        }
        bail!("LEB128 too long")
    }

    fn string(&mut self) -> Result<String> {
        let len = self.leb()? as usize;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.data.len())
            .context("truncated")?;
        let s = String::from_utf8_lossy(&self.data[self.pos..end]).into_owned();
        self.pos = end;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dylink_section_is_parsed_and_bounded() {
        // mem-info: size 300, align 4, table 2, table align 0; needed ["libA.so"]
        let mut data = vec![1, 5, 0xac, 0x02, 4, 2, 0];
        data.extend([2, 9, 1, 7]);
        data.extend(b"libA.so");
        let d = parse_dylink(&data).unwrap();
        assert_eq!((d.mem_size, d.mem_align, d.table_size), (300, 4, 2));
        assert_eq!(d.needed, vec!["libA.so".to_string()]);
        assert!(parse_dylink(&[2, 200, 1]).is_err());
        assert!(parse_dylink(&[1, 3, 0xff, 0xff, 0xff]).is_err());
    }
}
