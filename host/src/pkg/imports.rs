//! Checking a package's side modules against what the sandbox offers, at
//! install time: every symbol a module imports must be defined by R.wasm,
//! webR's bundled libraries, hako's host functions (what R.wasm itself
//! imports), the module itself or another module of the same package —
//! unless `dylink.0` marks the import weak. A module that would link and
//! then trap on its first call to a missing function (R 4.6 hid
//! `TRUELENGTH`, `R_nchar`, ...) is refused here, naming the symbols.

use anyhow::{bail, Context};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use wasmparser::{Parser, Payload, TypeRef};

/// Symbols the sandbox defines for side modules.
pub struct Provided {
    names: HashSet<String>,
}

/// The imports every side module has, which the dynamic linker wires itself.
const LINKER_IMPORTS: &[&str] = &[
    "memory",
    "__indirect_function_table",
    "__stack_pointer",
    "__memory_base",
    "__table_base",
];

impl Provided {
    /// From an asset dir: `R.wasm`'s exports and `env` function imports (the
    /// host functions hako provides) and the exports of `lib/*.so`.
    pub fn from_assets(assets: &Path) -> anyhow::Result<Provided> {
        let mut names = HashSet::new();
        let main = assets.join("R.wasm");
        let bytes = std::fs::read(&main).with_context(|| format!("reading {}", main.display()))?;
        let r = Surface::parse(&bytes).context("reading R.wasm's imports and exports")?;
        names.extend(r.exports);
        names.extend(
            r.imports
                .into_iter()
                .filter(|i| i.func && matches!(i.module.as_str(), "env" | "wasi_snapshot_preview1"))
                .map(|i| i.name),
        );
        let lib = assets.join("lib");
        if let Ok(dir) = std::fs::read_dir(&lib) {
            for e in dir.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "so") {
                    let bytes = std::fs::read(&p)?;
                    let s = Surface::parse(&bytes)
                        .with_context(|| format!("reading {}", p.display()))?;
                    names.extend(s.exports);
                }
            }
        }
        Ok(Provided { names })
    }

    #[cfg(test)]
    fn of(names: &[&str]) -> Provided {
        Provided {
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// One import of a module.
struct Import {
    module: String,
    name: String,
    func: bool,
}

/// A module's imports and export names.
pub struct Surface {
    imports: Vec<Import>,
    exports: Vec<String>,
    weak: HashSet<String>,
}

impl Surface {
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Surface> {
        let mut s = Surface {
            imports: Vec::new(),
            exports: Vec::new(),
            weak: HashSet::new(),
        };
        let mut parser = Parser::new(0);
        parser.set_features(wasmparser::WasmFeatures::all());
        for payload in parser.parse_all(bytes) {
            match payload? {
                Payload::ImportSection(r) => {
                    for imp in r.into_imports() {
                        let imp = imp?;
                        s.imports.push(Import {
                            module: imp.module.to_string(),
                            name: imp.name.to_string(),
                            func: matches!(imp.ty, TypeRef::Func(_) | TypeRef::FuncExact(_)),
                        });
                    }
                }
                Payload::ExportSection(r) => {
                    for e in r {
                        s.exports.push(e?.name.to_string());
                    }
                }
                _ => {}
            }
        }
        s.weak = hako_runtime::modinfo::ModuleInfo::parse(bytes)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?
            .dylink
            .weak_imports;
        Ok(s)
    }

    pub fn exports(&self) -> &[String] {
        &self.exports
    }
}

/// The symbols `module` imports that nothing defines, sorted; `siblings`
/// are the exports of the package's other modules. An import from a module
/// namespace the linker does not serve is an error of its own.
pub fn missing(
    module: &Surface,
    provided: &Provided,
    siblings: &HashSet<String>,
) -> anyhow::Result<BTreeSet<String>> {
    let own: HashSet<&str> = module.exports.iter().map(String::as_str).collect();
    let mut missing = BTreeSet::new();
    for imp in &module.imports {
        match imp.module.as_str() {
            "env" if LINKER_IMPORTS.contains(&imp.name.as_str()) => continue,
            "env" | "wasi_snapshot_preview1" | "GOT.mem" | "GOT.func" => {}
            other => bail!(
                "it imports {other}.{}, and hako's linker serves only env, GOT.mem, GOT.func \
                 and wasi_snapshot_preview1",
                imp.name
            ),
        }
        let n = imp.name.as_str();
        if provided.names.contains(n)
            || own.contains(n)
            || siblings.contains(n)
            || module.weak.contains(n)
        {
            continue;
        }
        missing.insert(imp.name.clone());
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{
        CustomSection, EntityType, ExportKind, ExportSection, GlobalType, ImportSection, Module,
        TypeSection, ValType,
    };

    fn module(imports: &[(&str, &str)]) -> Vec<u8> {
        let mut m = Module::new();
        m.section(&CustomSection {
            name: "dylink.0".into(),
            data: std::borrow::Cow::Borrowed(&[1, 4, 0, 0, 0, 0]),
        });
        let mut t = TypeSection::new();
        t.ty().function([], []);
        m.section(&t);
        let mut i = ImportSection::new();
        for (module, name) in imports {
            let ty = if module.starts_with("GOT") {
                EntityType::Global(GlobalType {
                    val_type: ValType::I32,
                    mutable: true,
                    shared: false,
                })
            } else {
                EntityType::Function(0)
            };
            i.import(module, name, ty);
        }
        m.section(&i);
        let mut e = ExportSection::new();
        e.export("own", ExportKind::Func, 0);
        m.section(&e);
        m.finish()
    }

    #[test]
    fn unknown_symbols_are_named_and_known_ones_pass() {
        let p = Provided::of(&["Rf_eval", "malloc"]);
        let m = Surface::parse(&module(&[
            ("env", "Rf_eval"),
            ("GOT.mem", "malloc"),
            ("env", "own"),
            ("env", "TRUELENGTH"),
            ("GOT.func", "R_nchar"),
            ("env", "sib"),
        ]))
        .unwrap();
        let sib: HashSet<String> = ["sib".to_string()].into();
        let got: Vec<String> = missing(&m, &p, &sib).unwrap().into_iter().collect();
        assert_eq!(got, ["R_nchar", "TRUELENGTH"]);
        let m = Surface::parse(&module(&[("evil", "x")])).unwrap();
        assert!(missing(&m, &p, &sib).is_err());
    }
}
