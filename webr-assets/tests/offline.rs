//! Tests that need neither npm nor node: integrity, the manifest checks, tar
//! safety, and the wasm/file-packager readers on small synthetic inputs.

use std::fs;
use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use hako_assets::manifest::{Manifest, MANIFEST_FILE};
use hako_assets::npm::{check_integrity, sri_sha512, WEBR};
use hako_assets::tarball::{extract_tgz, read_tgz};
use hako_assets::vfs_image::ImageMetadata;
use hako_assets::wasm::{embedded_files, has_legacy_eh, validate_exnref};
use hako_assets::{AssetError, Assets, FileProblem, ProblemKind, TarballSources};
use sha2::{Digest, Sha256};
use wasm_encoder::{
    BlockType, Catch, CodeSection, ConstExpr, DataSection, EntityType, Function, FunctionSection,
    ImportSection, Instruction, MemorySection, MemoryType, Module, TagKind, TagSection, TagType,
    TypeSection, ValType,
};

// ---------------------------------------------------------------- helpers

/// A gzipped tarball; each entry's name is written raw into the header so
/// tests can produce names `tar::Builder` itself would refuse.
fn tgz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, data) in entries {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Writes a small but complete asset dir with the crate's own manifest writer.
fn fake_assets(dir: &Path) {
    let mut m = Manifest::new();
    m.write_file(dir, "R.wasm", b"\0asm\x01\0\0\0", Some(true))
        .unwrap();
    m.write_file(dir, "lib/libRblas.so", b"\0asm\x01\0\0\0blas", Some(false))
        .unwrap();
    m.write_file(
        dir,
        "lib/libRlapack.so",
        b"\0asm\x01\0\0\0lapack",
        Some(false),
    )
    .unwrap();
    m.write_file(
        dir,
        "rootfs/usr/lib/R/etc/Renviron",
        b"R_HOME=/usr/lib/R\n",
        None,
    )
    .unwrap();
    m.write(dir).unwrap();
}

fn problems(err: AssetError) -> Vec<FileProblem> {
    match err {
        AssetError::Damaged { problems, .. } => problems,
        other => panic!("expected Damaged, got {other:?}"),
    }
}

// ---------------------------------------------------------------- integrity

#[test]
fn tarball_with_wrong_sha512_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("webr-0.6.0.tgz");
    let bytes = tgz(&[("package/dist/R.wasm", b"not really R")]);
    fs::write(&path, &bytes).unwrap();

    let err = check_integrity("webr@0.6.0", &path, WEBR.integrity).unwrap_err();
    match &err {
        AssetError::Integrity {
            package,
            expected,
            actual,
        } => {
            assert_eq!(package, "webr@0.6.0");
            assert_eq!(expected, WEBR.integrity);
            assert_eq!(actual, &sri_sha512(&bytes));
        }
        other => panic!("expected Integrity, got {other:?}"),
    }
    assert!(err.to_string().contains("refusing"), "{err}");

    // The same check passes when the pinned value is the tarball's own.
    assert_eq!(
        check_integrity("x", &path, &sri_sha512(&bytes)).unwrap(),
        bytes
    );
}

#[test]
fn sri_matches_npm_format() {
    // `printf abc | openssl dgst -sha512 -binary | base64`
    assert_eq!(
        sri_sha512(b"abc"),
        "sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw=="
    );
}

#[test]
fn fetch_never_uses_a_tarball_with_wrong_integrity() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("webr.tgz");
    fs::write(&bad, tgz(&[("package/dist/R.wasm", b"evil")])).unwrap();
    // A partial dir from an interrupted build: fetch must want to rebuild it.
    let dir = tmp.path().join("assets");
    fs::create_dir_all(dir.join("lib")).unwrap();
    fs::write(dir.join("R.wasm"), b"half").unwrap();

    let sources = TarballSources {
        webr: Some(bad),
        binaryen: None,
    };
    let mut msgs = Vec::new();
    let err = Assets::fetch_from(&dir, &sources, &mut |m| msgs.push(m.to_string())).unwrap_err();
    assert!(matches!(err, AssetError::Integrity { .. }), "{err:?}");
    assert!(
        msgs.iter()
            .any(|m| m.contains("rebuilding") && m.contains("incomplete")),
        "{msgs:?}"
    );
    // Nothing was built or swapped in, and no temp dirs are left behind.
    assert_eq!(fs::read(dir.join("R.wasm")).unwrap(), b"half");
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp-") || n.contains(".work-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

// ---------------------------------------------------------------- open / verify

#[test]
fn verify_accepts_intact_dir_and_names_a_corrupted_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fake_assets(dir);

    let assets = Assets::verify(dir).unwrap();
    let manifest_bytes = fs::read(dir.join(MANIFEST_FILE)).unwrap();
    assert_eq!(assets.id(), hex::encode(Sha256::digest(&manifest_bytes)));
    assert_eq!(assets.r_wasm(), dir.join("R.wasm"));
    assert_eq!(assets.lib_dir(), dir.join("lib"));
    assert_eq!(assets.rootfs(), dir.join("rootfs"));
    assert_eq!(assets.manifest().files["R.wasm"].translated, Some(true));

    // Flip one byte, keeping the size: `open` does not hash, `verify` does.
    let victim = dir.join("rootfs/usr/lib/R/etc/Renviron");
    let mut bytes = fs::read(&victim).unwrap();
    bytes[3] ^= 0x20;
    fs::write(&victim, &bytes).unwrap();
    assert!(Assets::open(dir).is_ok());
    let err = Assets::verify(dir).unwrap_err();
    let msg = err.to_string();
    assert_eq!(
        problems(err),
        vec![FileProblem {
            path: "rootfs/usr/lib/R/etc/Renviron".into(),
            kind: ProblemKind::WrongHash
        }]
    );
    assert!(
        msg.contains("rootfs/usr/lib/R/etc/Renviron") && msg.contains("hako assets fetch"),
        "{msg}"
    );
}

#[test]
fn open_names_missing_and_resized_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fake_assets(dir);
    fs::remove_file(dir.join("lib/libRblas.so")).unwrap();
    fs::write(dir.join("lib/libRlapack.so"), b"short").unwrap();

    let err = Assets::open(dir).unwrap_err();
    let msg = err.to_string();
    assert_eq!(
        problems(err),
        vec![
            FileProblem {
                path: "lib/libRblas.so".into(),
                kind: ProblemKind::Missing
            },
            FileProblem {
                path: "lib/libRlapack.so".into(),
                kind: ProblemKind::WrongSize {
                    expected: 14,
                    actual: 5
                }
            },
        ]
    );
    assert!(msg.contains("lib/libRblas.so is missing"), "{msg}");
}

#[test]
fn truncated_or_missing_manifest_is_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fake_assets(dir);
    let manifest = dir.join(MANIFEST_FILE);
    let bytes = fs::read(&manifest).unwrap();
    fs::write(&manifest, &bytes[..bytes.len() / 2]).unwrap();
    for err in [
        Assets::open(dir).unwrap_err(),
        Assets::verify(dir).unwrap_err(),
    ] {
        assert!(matches!(err, AssetError::Partial { .. }), "{err:?}");
        assert!(err.to_string().contains("incomplete"), "{err}");
    }

    fs::remove_file(&manifest).unwrap();
    let err = Assets::open(dir).unwrap_err();
    assert!(matches!(err, AssetError::Partial { .. }), "{err:?}");

    let err = Assets::open(&dir.join("nowhere")).unwrap_err();
    assert!(matches!(err, AssetError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("hako assets fetch"), "{err}");
}

#[test]
fn manifest_from_another_version_or_with_unsafe_paths_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fake_assets(dir);
    let path = dir.join(MANIFEST_FILE);
    let original = fs::read_to_string(&path).unwrap();

    fs::write(
        &path,
        original.replace("\"webr\": \"0.6.0\"", "\"webr\": \"0.5.0\""),
    )
    .unwrap();
    let err = Assets::open(dir).unwrap_err();
    assert!(matches!(err, AssetError::WrongVersion { .. }), "{err:?}");

    fs::write(
        &path,
        original.replace("rootfs/usr/lib/R/etc/Renviron", "../outside"),
    )
    .unwrap();
    let err = Assets::open(dir).unwrap_err();
    assert!(matches!(err, AssetError::Partial { .. }), "{err:?}");
}

#[test]
fn fetch_reuses_a_verified_dir_without_building() {
    let tmp = tempfile::tempdir().unwrap();
    fake_assets(tmp.path());
    // A tarball source that would fail proves nothing is fetched.
    let sources = TarballSources {
        webr: Some(tmp.path().join("absent.tgz")),
        binaryen: None,
    };
    let mut msgs = Vec::new();
    let assets =
        Assets::fetch_from(tmp.path(), &sources, &mut |m| msgs.push(m.to_string())).unwrap();
    assert_eq!(assets.dir(), tmp.path());
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].contains("reusing"), "{msgs:?}");
}

// ---------------------------------------------------------------- tarballs

#[test]
fn tar_entries_with_parent_or_absolute_paths_are_refused() {
    for evil in ["package/../../evil.txt", "../evil.txt", "/tmp/evil.txt"] {
        let archive = tgz(&[("package/ok.txt", b"ok"), (evil, b"pwned")]);
        let err = read_tgz("t.tgz", &archive, |_| true).unwrap_err();
        assert!(
            matches!(&err, AssetError::UnsafeTarPath { entry, .. } if entry == evil),
            "{evil}: {err:?}"
        );
        // Refused even when the caller would not keep that entry.
        let err = read_tgz("t.tgz", &archive, |p| p == "package/ok.txt").unwrap_err();
        assert!(matches!(err, AssetError::UnsafeTarPath { .. }), "{err:?}");

        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        let err = extract_tgz("t.tgz", &archive, &dest, |_| true).unwrap_err();
        assert!(matches!(err, AssetError::UnsafeTarPath { .. }), "{err:?}");
        assert!(!tmp.path().join("evil.txt").exists());
    }
}

#[test]
fn tar_extraction_keeps_selected_files() {
    let archive = tgz(&[
        ("package/a.txt", b"A"),
        ("./package/dir/b.txt", b"B"),
        ("package/c", b"C"),
    ]);
    let files = read_tgz("t.tgz", &archive, |p| p != "package/c").unwrap();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["package/a.txt", "package/dir/b.txt"]
    );
    assert_eq!(files["package/dir/b.txt"], b"B");

    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(
        extract_tgz("t.tgz", &archive, tmp.path(), |_| true).unwrap(),
        3
    );
    assert_eq!(
        fs::read(tmp.path().join("package/dir/b.txt")).unwrap(),
        b"B"
    );
}

#[test]
fn corrupt_tarball_is_an_error_not_a_panic() {
    let mut archive = tgz(&[("package/a.txt", &[7u8; 5000])]);
    let mid = archive.len() / 2;
    archive[mid..].iter_mut().for_each(|b| *b ^= 0xa5);
    let err = read_tgz("t.tgz", &archive, |_| true).unwrap_err();
    assert!(matches!(err, AssetError::Tarball { .. }), "{err:?}");
    let err = read_tgz("t.tgz", b"definitely not gzip", |_| true).unwrap_err();
    assert!(matches!(err, AssetError::Tarball { .. }), "{err:?}");
}

// ---------------------------------------------------------------- wasm

/// A module shaped like Emscripten's main module: it imports
/// `_emscripten_fs_load_embedded_files` (after an unrelated import), calls it
/// from a ctor with `i32.const ADDR`, and stores the records in data segments.
fn embedding_module(
    records: &[(u32, u32, u32)],
    calls: &[i32],
    segments: &[(i32, Vec<u8>)],
) -> Vec<u8> {
    const ADDR: i32 = 64;
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], []);
    types.ty().function([], []);
    let mut imports = ImportSection::new();
    imports.import("env", "emscripten_stack_init", EntityType::Function(0));
    imports.import(
        "env",
        "_emscripten_fs_load_embedded_files",
        EntityType::Function(0),
    );
    let mut funcs = FunctionSection::new();
    funcs.function(1);
    let mut memory = MemorySection::new();
    memory.memory(MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    let mut ctor = Function::new([]);
    // A decoy: a constant passed to the other import.
    ctor.instruction(&Instruction::I32Const(ADDR + 1000));
    ctor.instruction(&Instruction::Call(0));
    for &addr in calls {
        ctor.instruction(&Instruction::I32Const(addr));
        ctor.instruction(&Instruction::Call(1));
    }
    ctor.instruction(&Instruction::End);
    let mut code = CodeSection::new();
    code.function(&ctor);

    let mut table = Vec::new();
    for (name, size, data) in records {
        for v in [name, size, data] {
            table.extend_from_slice(&v.to_le_bytes());
        }
    }
    table.extend_from_slice(&[0; 12]); // terminator: next name_ptr == 0
    let mut data = DataSection::new();
    data.active(0, &ConstExpr::i32_const(ADDR), table);
    for (offset, bytes) in segments {
        data.active(0, &ConstExpr::i32_const(*offset), bytes.iter().copied());
    }

    let mut module = Module::new();
    module
        .section(&types)
        .section(&imports)
        .section(&funcs)
        .section(&memory)
        .section(&code)
        .section(&data);
    module.finish()
}

fn names_and_contents() -> Vec<(i32, Vec<u8>)> {
    vec![
        (200, b"/usr/lib/R/etc/Renviron\0".to_vec()),
        (240, b"/usr/lib/R/library/base/R/base\0".to_vec()),
        (300, b"R_HOME=/usr/lib/R\n".to_vec()),
        // Overlaps the previous segment's tail: later segments win.
        (316, b"X\nbase code".to_vec()),
    ]
}

#[test]
fn embedded_file_records_are_walked() {
    let module = embedding_module(
        &[(200, 18, 300), (240, 9, 318)],
        &[64],
        &names_and_contents(),
    );
    wasmparser::Validator::new().validate_all(&module).unwrap();
    let files = embedded_files(&module).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].path, "/usr/lib/R/etc/Renviron");
    assert_eq!(files[0].data, b"R_HOME=/usr/lib/X\n");
    assert_eq!(files[1].path, "/usr/lib/R/library/base/R/base");
    assert_eq!(files[1].data, b"base code");
}

#[test]
fn embedded_file_walker_rejects_bad_tables() {
    let segs = names_and_contents();
    let detail = |module: Vec<u8>| match embedded_files(&module).unwrap_err() {
        AssetError::EmbeddedFiles { detail } => detail,
        other => panic!("expected EmbeddedFiles, got {other:?}"),
    };
    // No call site, and two call sites.
    assert!(detail(embedding_module(&[(200, 18, 300)], &[], &segs)).contains("found 0"));
    assert!(detail(embedding_module(&[(200, 18, 300)], &[64, 64], &segs)).contains("found 2"));
    // A size that runs past the initialised data.
    assert!(detail(embedding_module(&[(200, 1 << 30, 300)], &[64], &segs)).contains("goes past"));
    // Relative and `..` names.
    let mut evil = segs.clone();
    evil[0].1 = b"/usr/lib/../../etc/passwd\0".to_vec();
    assert!(detail(embedding_module(&[(200, 18, 300)], &[64], &evil)).contains("unsafe path"));
    evil[0].1 = b"usr/lib/R/etc/Renviron\0".to_vec();
    assert!(detail(embedding_module(&[(200, 18, 300)], &[64], &evil)).contains("unsafe path"));
    // Garbage is an error, not a panic.
    assert!(embedded_files(b"\0asm\x01\0\0\0\x0a\xff\xff").is_err());
}

/// A module with a tag and one function whose body is `body`.
fn eh_module(body: &[Instruction]) -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], []);
    types.ty().function([], []);
    let mut funcs = FunctionSection::new();
    funcs.function(1);
    let mut tags = TagSection::new();
    tags.tag(TagType {
        kind: TagKind::Exception,
        func_type_idx: 0,
    });
    let mut f = Function::new([]);
    for i in body {
        f.instruction(i);
    }
    f.instruction(&Instruction::End);
    let mut code = CodeSection::new();
    code.function(&f);
    let mut module = Module::new();
    module
        .section(&types)
        .section(&funcs)
        .section(&tags)
        .section(&code);
    module.finish()
}

#[test]
fn legacy_eh_is_detected_and_exnref_validates() {
    let legacy = [
        eh_module(&[
            Instruction::Try(BlockType::Empty),
            Instruction::CatchAll,
            Instruction::End,
        ]),
        eh_module(&[
            Instruction::Try(BlockType::Empty),
            Instruction::Catch(0),
            Instruction::Drop,
            Instruction::End,
        ]),
        eh_module(&[Instruction::Try(BlockType::Empty), Instruction::Delegate(0)]),
        eh_module(&[
            Instruction::Try(BlockType::Empty),
            Instruction::CatchAll,
            Instruction::Rethrow(0),
            Instruction::End,
        ]),
    ];
    for m in &legacy {
        assert!(has_legacy_eh("legacy", m).unwrap());
        let err = validate_exnref(m).unwrap_err();
        assert!(err.contains("legacy_exceptions"), "{err}");
    }

    let modern = eh_module(&[
        Instruction::Block(BlockType::Empty),
        Instruction::TryTable(BlockType::Empty, vec![Catch::All { label: 0 }].into()),
        Instruction::End,
        Instruction::End,
    ]);
    assert!(!has_legacy_eh("modern", &modern).unwrap());
    validate_exnref(&modern).unwrap();
    assert!(!has_legacy_eh("plain", &eh_module(&[Instruction::Nop])).unwrap());

    let err = has_legacy_eh("junk.so", b"\0asm\x01\0\0\0\x0a\x05\x01\x03\x00\x06").unwrap_err();
    assert!(
        matches!(&err, AssetError::Wasm { module, .. } if module == "junk.so"),
        "{err:?}"
    );
}

// ---------------------------------------------------------------- file-packager images

#[test]
fn vfs_image_is_split_by_metadata() {
    let json = br#"{"files":[{"filename":"/zoneinfo/UTC","start":0,"end":3},
        {"filename":"/zoneinfo/Europe/London","start":3,"end":9}],"gzip":true,"remote_package_size":9}"#;
    let meta = ImageMetadata::parse("usr/lib/R/share", json).unwrap();
    assert_eq!(meta.data_suffix(), ".data.gz");
    let files = meta.unpack("usr/lib/R/share", &gzip(b"UTCLondon")).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].path, "/usr/lib/R/share/zoneinfo/UTC");
    assert_eq!(files[0].data, b"UTC");
    assert_eq!(files[1].path, "/usr/lib/R/share/zoneinfo/Europe/London");
    assert_eq!(files[1].data, b"London");
}

#[test]
fn vfs_image_bounds_and_names_are_checked() {
    let unpack = |json: &str, data: &[u8]| {
        ImageMetadata::parse("img", json.as_bytes())
            .and_then(|m| m.unpack("img", data))
            .unwrap_err()
    };
    let data = gzip(b"0123456789");
    let cases = [
        (
            r#"{"files":[{"filename":"/a","start":0,"end":11}],"gzip":true}"#,
            &data[..],
        ),
        (
            r#"{"files":[{"filename":"/a","start":5,"end":4}],"gzip":true}"#,
            &data[..],
        ),
        (
            r#"{"files":[{"filename":"/../a","start":0,"end":1}],"gzip":true}"#,
            &data[..],
        ),
        (
            r#"{"files":[{"filename":"a","start":0,"end":1}],"gzip":true}"#,
            &data[..],
        ),
        (
            r#"{"files":[{"filename":"/a","start":0,"end":1}],"gzip":true}"#,
            b"not gzip",
        ),
        (r#"{"files":[{"filename":"/a"}]}"#, b""),
    ];
    for (json, data) in cases {
        let err = unpack(json, data);
        assert!(
            matches!(err, AssetError::VfsImage { .. }),
            "{json}: {err:?}"
        );
    }
    // Uncompressed images work too.
    let meta =
        ImageMetadata::parse("img", br#"{"files":[{"filename":"/a","start":2,"end":4}]}"#).unwrap();
    assert_eq!(meta.data_suffix(), ".data");
    assert_eq!(meta.unpack("img", b"0123").unwrap()[0].data, b"23");
}
