//! Fetches (or reuses) the webR assets: `cargo run --release -p hako-assets --example fetch [DIR]`.
//! DIR defaults to `Assets::default_dir()`.

use std::path::PathBuf;
use std::time::Instant;

use hako_assets::Assets;

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(Assets::default_dir);
    let started = Instant::now();
    let mut progress = |msg: &str| eprintln!("[{:6.1} s] {msg}", started.elapsed().as_secs_f64());
    match Assets::fetch(&dir, &mut progress) {
        Ok(assets) => println!(
            "{} (id {}) in {:.1} s",
            assets.dir().display(),
            assets.id(),
            started.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
