//! `SpinningThreads`: work started while the pool's threads spin runs to the same results,
//! nested and from every thread, and nothing spins (or hangs) where there is no pool.

use pixreg_kernels::SpinningThreads;
use rayon::prelude::*;

/// A sum split recursively over `rayon::join`, so that tasks are pushed, stolen and waited
/// for at every depth.
fn split_sum(values: &[u64]) -> u64 {
    if values.len() <= 64 {
        return values.iter().sum();
    }
    let (a, b) = values.split_at(values.len() / 2);
    let (x, y) = rayon::join(|| split_sum(a), || split_sum(b));
    x + y
}

#[test]
fn work_under_spinning_threads_gives_the_same_results() {
    let values: Vec<u64> = (0..100_000).collect();
    let expected: u64 = values.iter().sum();
    for threads in [1, 2, 4] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            for _ in 0..50 {
                let _spinning = SpinningThreads::start();
                assert_eq!(split_sum(&values), expected);
                let squares: u64 = values.par_iter().map(|v| v % 7).sum();
                assert_eq!(squares, values.iter().map(|v| v % 7).sum::<u64>());
            }
            // Guards started from pool tasks and nested in one another.
            let sums: Vec<u64> = (0..8)
                .into_par_iter()
                .map(|_| {
                    let _outer = SpinningThreads::start();
                    let _inner = SpinningThreads::start();
                    split_sum(&values)
                })
                .collect();
            assert!(sums.iter().all(|&s| s == expected));
            // With two threads or more the guard spins (unless the environment says not to).
            let allowed = std::env::var(pixreg_kernels::SPIN_VAR).map_or(true, |v| v != "0");
            let spinning = SpinningThreads::start();
            assert_eq!(
                format!("{spinning:?}").contains("Some"),
                threads > 1 && allowed
            );
        });
    }
}

#[test]
fn outside_a_pool_nothing_spins() {
    let spinning = SpinningThreads::start();
    assert!(format!("{spinning:?}").contains("None"));
    let values: Vec<u64> = (0..10_000).collect();
    assert_eq!(split_sum(&values), values.iter().sum::<u64>());
}
