//! The image sources' speed: decoding and resizing a folder of 60,000 small PNGs, and a
//! cached load of the result.
//!
//! `RAYON_NUM_THREADS=2 cargo bench --bench images -- [N] [DIR]`: writes N (default
//! 60,000) 28×28 grayscale PNGs in 10 class folders under DIR (default a temp folder; the
//! images are Fashion-MNIST's when Debian's dataset-fashion-mnist is installed, else a
//! seeded pattern), then times
//!
//! 1. the first read: listing, decoding, resizing to 32×32, grey to RGB, writing the cache;
//! 2. a cached read of the same folder in a fresh process (listing and stat of every file,
//!    key, memory map), and a pass over every pixel, with the process's peak memory after
//!    each.
//!
//! Prints one line per figure.

use std::path::{Path, PathBuf};
use std::time::Instant;

use nas_pipe::data::{self, ReadOptions};
use nas_pipe::spec::Spanned;
use nas_pipe::spec::pipeline::{Data, ImageOptions, Resize};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.first().map(String::as_str) == Some("cached") {
        return cached(Path::new(&args[1]));
    }
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(60_000);
    let root = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("nas-pipe-bench-images"));
    let _ = std::fs::remove_dir_all(&root);
    let t = Instant::now();
    write_pngs(&root.join("imgs"), n);
    println!("wrote {n} PNGs in {:.1} s", t.elapsed().as_secs_f64());
    let threads = rayon::current_num_threads();
    let t = Instant::now();
    let s = read(&root);
    println!(
        "first read (decode + resize 28→32 + grey→RGB + cache) of {} images on {threads} threads: {:.2} s",
        s.train.len(),
        t.elapsed().as_secs_f64()
    );
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("cached")
        .arg(&root)
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&root);
}

fn data() -> Data {
    Data::ImageFolder {
        dir: "imgs".into(),
        image: Spanned::unspanned(ImageOptions {
            size: Spanned::unspanned(32),
            channels: Spanned::unspanned(3),
            resize: Resize::Crop,
            limit: None,
            skip_unreadable: false,
            class_names: None,
        }),
    }
}

fn read(root: &Path) -> data::Source {
    let opts = ReadOptions {
        folder: Some(root.join("run-data")),
        progress: false,
    };
    data::read_with(&data(), Some(root), 0, &opts).unwrap()
}

/// The cached read, in a process of its own so that its peak memory is its own.
fn cached(root: &Path) {
    let t = Instant::now();
    let s = read(root);
    let load = t.elapsed().as_secs_f64();
    println!(
        "cached read of {} images of 3×32×32 ({} MB of pixels): {load:.2} s, peak memory {} MB",
        s.train.len(),
        s.train.images().len() / 1_000_000,
        peak_mb()
    );
    let t = Instant::now();
    let sum: u64 = s.train.images().iter().map(|&v| v as u64).sum();
    println!(
        "then a pass over every pixel (sum {sum}): {:.2} s, peak memory {} MB",
        t.elapsed().as_secs_f64(),
        peak_mb()
    );
}

/// The process's peak resident memory (VmHWM), in MB.
fn peak_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024 / 1_000_000)
}

/// `n` 28×28 grey PNGs in 10 class folders: Fashion-MNIST's images when installed.
fn write_pngs(dir: &Path, n: usize) {
    let fashion = Path::new("/usr/share/datasets/fashion-mnist");
    let source = fashion
        .is_dir()
        .then(|| data::idx::load(fashion, "fashion-mnist").ok())
        .flatten()
        .map(|(train, _)| train);
    for c in 0..10 {
        std::fs::create_dir_all(dir.join(c.to_string())).unwrap();
    }
    use rayon::prelude::*;
    (0..n).into_par_iter().for_each(|i| {
        let (px, label) = match &source {
            Some(d) => (d.image(i % d.len()).to_vec(), d.label(i % d.len())),
            None => (
                (0..784).map(|k| ((k * 7 + i * 13) % 256) as u8).collect(),
                (i % 10) as u32,
            ),
        };
        image::GrayImage::from_raw(28, 28, px)
            .unwrap()
            .save(dir.join(format!("{label}/{i:05}.png")))
            .unwrap();
    });
}
