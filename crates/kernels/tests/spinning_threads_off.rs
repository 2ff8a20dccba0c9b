//! `PIXREG_SPIN_THREADS=0` keeps `SpinningThreads` from spinning (its own process: the
//! variable is read once).

use pixreg_kernels::{SpinningThreads, SPIN_VAR};

#[test]
fn the_variable_turns_spinning_off() {
    std::env::set_var(SPIN_VAR, "0");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        let spinning = SpinningThreads::start();
        assert!(format!("{spinning:?}").contains("None"), "{spinning:?}");
    });
}
