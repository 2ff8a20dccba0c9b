//! Time and peak memory (VmHWM) to load full MNIST (gzipped IDX) and the full CIFAR-10 JPEG
//! archive (`.tar.xz`, 60,000 JPEGs) from the data directory.
//!
//! `cargo run --release -p pixreg-datasets --example load_bench [-- DATASET...]`
//! Data directory: `PIXREG_DATA_DIR`, else the repository's `../shared/datasets`. Each dataset
//! is loaded in its own child process so that the peak resident memory is its own.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use pixreg_datasets::{load_train_test, DatasetName, LoadOptions};

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn data_dir() -> PathBuf {
    std::env::var_os("PIXREG_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/datasets"
            ))
        })
}

fn bench(name: DatasetName, rgb: bool) -> Result<(), Box<dyn std::error::Error>> {
    let opts = LoadOptions::new(data_dir()).rgb(rgb);
    let start = Instant::now();
    let (train, test) = load_train_test(name, &opts)?;
    let secs = start.elapsed().as_secs_f64();
    let bytes = train.images.len() + test.images.len();
    println!(
        "{name:<13} rgb={rgb:<5} train {}x{}x{}x{} test {}: {secs:6.2} s, u8 pixels {:6.1} MiB, peak RSS {:6.1} MiB, threads {}",
        train.n,
        train.channels,
        train.height,
        train.width,
        test.n,
        bytes as f64 / (1024.0 * 1024.0),
        peak_rss_mib().unwrap_or(f64::NAN),
        rayon::current_num_threads(),
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [name, rgb] = args.as_slice() {
        return bench(name.parse()?, rgb == "rgb");
    }
    let exe = std::env::current_exe()?;
    for (name, rgb) in [
        ("mnist", "gray"),
        ("cifar10-jpeg", "gray"),
        ("cifar10-jpeg", "rgb"),
    ] {
        let status = Command::new(&exe).args([name, rgb]).status()?;
        if !status.success() {
            return Err(format!("{name} {rgb}: child failed with {status}").into());
        }
    }
    Ok(())
}
