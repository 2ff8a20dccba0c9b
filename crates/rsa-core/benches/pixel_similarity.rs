//! Benchmark: pixel similarity and pair selection for N = 5000 grayscale 32×32 images, plus
//! the compact selection and the lazy `all` sampler for N = 50 000 (a full training set).
//!
//! Run with `cargo bench -p rsa-core --bench pixel_similarity`. Each case runs in its own
//! process (the bench re-executes itself) so that its peak RSS (`VmHWM`) is its own. The images
//! are deterministic smooth random patterns (similarities spread over [−1, 1], like real
//! photos); timings do not depend on their content except through the number of selected pairs.
//! The last line is one JSON object per case.

use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rsa_core::{
    pixel_similarity_matrix, select_pairs, select_pairs_with_matrix, PairRange, PairSelection,
    SimilaritySource, ThresholdedTargets,
};

const N: usize = 5000;
const SIDE: usize = 32;
const REPEATS: usize = 5;
const CASES: [&str; 7] = [
    "similarity_matrix",
    "select_all",
    "select_high_0.6",
    "select_all_with_matrix",
    "compact_selection_high_0.6",
    "compact_selection_high_0.6_n50000",
    "lazy_all_sampler_n50000",
];

/// Images of the large cases: a full training set's worth.
const N_LARGE: usize = 50_000;

fn images(n: usize) -> Tensor {
    let d = SIDE * SIDE;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let bases: Vec<Vec<f32>> = (0..8)
        .map(|_| (0..d).map(|_| rng.random::<f32>()).collect())
        .collect();
    let mut data = Vec::with_capacity(n * d);
    for _ in 0..n {
        let w: Vec<f32> = (0..8).map(|_| rng.random::<f32>()).collect();
        let total: f32 = w.iter().sum();
        for k in 0..d {
            let v: f32 = w.iter().zip(&bases).map(|(a, b)| a * b[k]).sum::<f32>() / total;
            data.push(((v * 255.0).round() / 255.0).clamp(0.0, 1.0));
        }
    }
    Tensor::from_vec(data, (n, 1, SIDE, SIDE), &Device::Cpu).expect("bench images")
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn run_case(case: &str) -> rsa_core::Result<()> {
    let n = if case.ends_with("n50000") { N_LARGE } else { N };
    let repeats = if n == N { REPEATS } else { 1 };
    let images = images(n);
    let input_mb = peak_rss_mb();
    let rule_all = ThresholdedTargets::new(0.8)?;
    let rule_high = ThresholdedTargets::new(0.6)?;
    let mut times = Vec::new();
    let mut selected = 0usize;
    for _ in 0..repeats {
        let t = Instant::now();
        selected = match case {
            "similarity_matrix" => pixel_similarity_matrix(&images)?.elem_count(),
            "select_all" => select_pairs(
                &SimilaritySource::from_images(&images)?,
                PairRange::All,
                &rule_all,
            )?
            .len(),
            "select_high_0.6" => select_pairs(
                &SimilaritySource::from_images(&images)?,
                PairRange::High,
                &rule_high,
            )?
            .len(),
            "select_all_with_matrix" => {
                let source = SimilaritySource::from_images(&images)?;
                select_pairs_with_matrix(&source, PairRange::All, &rule_all)?
                    .0
                    .len()
            }
            "lazy_all_sampler_n50000" => {
                let source = SimilaritySource::from_images(&images)?;
                let selection = PairSelection::build(source, PairRange::All, rule_all)?;
                let mut sampler = rsa_core::PairSampler::new(selection.into(), 16, 0)?;
                (0..1000).try_for_each(|_| sampler.next_batch().map(|_| ()))?;
                16_000
            }
            "compact_selection_high_0.6" | "compact_selection_high_0.6_n50000" => {
                let source = SimilaritySource::from_images(&images)?;
                PairSelection::build(source, PairRange::High, rule_high)?.len() as usize
            }
            other => {
                return Err(rsa_core::Error::InvalidArgument(format!(
                    "unknown case {other}"
                )))
            }
        };
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"case\":\"{case}\",\"n\":{n},\"dim\":{},\"median_s\":{:.4},\"min_s\":{:.4},\
         \"selected\":{selected},\"peak_rss_mb\":{:.0},\"rss_before_mb\":{:.0}}}",
        SIDE * SIDE,
        times[repeats / 2],
        times[0],
        peak_rss_mb(),
        input_mb
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--case") {
        if let Err(e) = run_case(&args[pos + 1]) {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
        return;
    }
    let exe = std::env::current_exe().expect("bench executable path");
    for case in CASES {
        let out = Command::new(&exe).args(["--case", case]).output();
        match out {
            Ok(o) if o.status.success() => print!("{}", String::from_utf8_lossy(&o.stdout)),
            Ok(o) => eprintln!("{case} failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => eprintln!("{case} could not start: {e}"),
        }
    }
}
