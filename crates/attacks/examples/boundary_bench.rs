//! Timing of the decision-based attacks on a small linear two-class model (no claims beyond
//! "this machine, this model"). Prints wall time, queries and distance / analytic minimum.
//!
//! `cargo run --release -p pixreg-attacks --example boundary_bench -- [n_images] [side]`

use candle_core::{Device, Tensor};
use pixreg_attacks::{BoundaryAttack, DecisionBasedAttack, FnClassifier, HopSkipJump};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(200);
    let side = args.get(1).copied().unwrap_or(28);
    let d = side * side;
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut w: Vec<f32> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
    let nrm = w.iter().map(|v| v * v).sum::<f32>().sqrt();
    w.iter_mut().for_each(|v| *v /= nrm);
    let sum_w: f32 = w.iter().sum();
    // unit-space margin of an image u: w·(u − 0.5) + 0.3
    let c = -0.5 * sum_w + 0.3;
    let mut wm = vec![0.0f32; d];
    wm.extend(&w);
    let wt = Tensor::from_vec(wm, (2, d), &dev)?.t()?;
    let b = Tensor::new(&[0.0f32, c], &dev)?;
    let model = FnClassifier::new(
        move |x: &Tensor| x.flatten_from(1)?.matmul(&wt)?.broadcast_add(&b),
        (0.0, 1.0),
    );
    let imgs: Vec<f32> = (0..n * d)
        .map(|_| (0.5 + 0.1 * rng.sample::<f32, _>(StandardNormal)).clamp(0.3, 0.7))
        .collect();
    let margins: Vec<f64> = imgs
        .chunks_exact(d)
        .map(|u| {
            (w.iter()
                .zip(u)
                .map(|(&a, &x)| a as f64 * (x as f64 - 0.5))
                .sum::<f64>()
                + 0.3)
                .abs()
        })
        .collect();
    let x = Tensor::from_vec(imgs, (n, 1, side, side), &dev)?;
    let labels = pixreg_attacks::predict_batched(&model, &x, 256)?;
    println!("linear model, {n} images of 1x{side}x{side}, CPU");

    let report = |name: &str, secs: f64, l2: Vec<f64>, q: Vec<usize>, k: usize| {
        let ratios: Vec<f64> = l2.iter().zip(&margins).map(|(a, m)| a / m).collect();
        println!(
            "{name:>22}: {secs:7.2}s  median dist/min {:.4}  max {:.4}  mean queries {:.0}  ok {k}/{n}",
            pixreg_attacks::median(&ratios),
            ratios.iter().cloned().fold(0.0, f64::max),
            q.iter().sum::<usize>() as f64 / n as f64
        );
    };
    for (name, attack) in [
        ("Boundary 50 (paper)", BoundaryAttack::paper()),
        ("Boundary 5000", BoundaryAttack::converged(5000)),
    ] {
        let t = Instant::now();
        let o = attack.run(&model, &x, &labels, 0)?;
        let k = o.iter().filter(|o| o.success).count();
        report(
            name,
            t.elapsed().as_secs_f64(),
            o.iter().map(|o| o.l2).collect(),
            o.iter().map(|o| o.queries).collect(),
            k,
        );
    }
    let t = Instant::now();
    let o = HopSkipJump::default().run(&model, &x, &labels, 0)?;
    let k = o.iter().filter(|o| o.success).count();
    report(
        "HopSkipJump 64",
        t.elapsed().as_secs_f64(),
        o.iter().map(|o| o.l2).collect(),
        o.iter().map(|o| o.queries).collect(),
        k,
    );
    Ok(())
}
