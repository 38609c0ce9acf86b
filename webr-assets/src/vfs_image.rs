//! Emscripten file-packager images (`NAME.js.metadata` + `NAME.data.gz`) from
//! webR's `dist/vfs`, and which of them hako ships in the rootfs.

use std::io::Read;

use flate2::read::GzDecoder;
use serde::Deserialize;

use crate::error::AssetError;
use crate::wasm::is_safe_absolute;

/// Images unpacked into the rootfs, by path below `dist/vfs` (= guest path),
/// with why each is needed. webR mounts these lazily; hako has no lazy mounts.
pub const SHIPPED_IMAGES: &[(&str, &str)] = &[
    (
        "usr/lib/R/share",
        "zoneinfo: R's time-zone code reads R_HOME/share/zoneinfo",
    ),
    (
        "usr/lib/R/library/parallel",
        "the parallel package, which R.wasm does not embed",
    ),
    (
        "usr/lib/R/library/grDevices/afm",
        "Adobe font metrics for the pdf() device",
    ),
    (
        "usr/lib/R/library/grDevices/enc",
        "font encodings for the pdf() device",
    ),
];

/// Largest unpacked image accepted; webR's biggest is about 10 MB.
const MAX_IMAGE_BYTES: u64 = 1 << 30;

/// The `NAME.js.metadata` JSON written by Emscripten's file packager.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageMetadata {
    pub files: Vec<ImageEntry>,
    /// Whether the data file is `NAME.data.gz` (true) or `NAME.data`.
    #[serde(default)]
    pub gzip: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageEntry {
    /// Absolute path below the image's mount point, e.g. `/zoneinfo/UTC`.
    pub filename: String,
    pub start: u64,
    pub end: u64,
}

/// A file of an unpacked image, at its absolute guest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub path: String,
    pub data: Vec<u8>,
}

impl ImageMetadata {
    pub fn parse(image: &str, json: &[u8]) -> Result<Self, AssetError> {
        serde_json::from_slice(json).map_err(|e| AssetError::VfsImage {
            image: image.to_string(),
            detail: format!("bad metadata: {e}"),
        })
    }

    /// Suffix of the data file next to the metadata.
    pub fn data_suffix(&self) -> &'static str {
        if self.gzip {
            ".data.gz"
        } else {
            ".data"
        }
    }

    /// Splits the data file into the image's files, mounted at `/<image>`.
    pub fn unpack(&self, image: &str, data: &[u8]) -> Result<Vec<ImageFile>, AssetError> {
        let err = |detail: String| AssetError::VfsImage {
            image: image.to_string(),
            detail,
        };
        let plain;
        let data = if self.gzip {
            let mut out = Vec::new();
            GzDecoder::new(data)
                .take(MAX_IMAGE_BYTES + 1)
                .read_to_end(&mut out)
                .map_err(|e| err(format!("cannot gunzip data: {e}")))?;
            if out.len() as u64 > MAX_IMAGE_BYTES {
                return Err(err(format!(
                    "data unpacks to more than {MAX_IMAGE_BYTES} bytes"
                )));
            }
            plain = out;
            &plain[..]
        } else {
            data
        };
        let mount = format!("/{}", image.trim_matches('/'));
        let mut files = Vec::with_capacity(self.files.len());
        for f in &self.files {
            if f.start > f.end || f.end > data.len() as u64 {
                return Err(err(format!(
                    "{} spans {}..{}, outside the {} bytes of data",
                    f.filename,
                    f.start,
                    f.end,
                    data.len()
                )));
            }
            let path = format!("{mount}{}", f.filename);
            if !f.filename.starts_with('/') || !is_safe_absolute(&path) {
                return Err(err(format!("unsafe file name {:?}", f.filename)));
            }
            files.push(ImageFile {
                path,
                data: data[f.start as usize..f.end as usize].to_vec(),
            });
        }
        Ok(files)
    }
}
