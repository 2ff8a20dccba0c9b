//! `run_candle_ops_on_caller` leaves candle's barrier pool without workers (its own process:
//! the setting is read once, when candle first builds the pool).

use candle_core::{Device, Tensor};
use pixreg_kernels::candle_pool::{run_candle_ops_on_caller, PoolOutcome, THREADS_VAR};

#[test]
fn candle_starts_no_pool_workers() {
    let outcome = run_candle_ops_on_caller();
    if std::env::var(THREADS_VAR).ok().as_deref() != Some("1") {
        // A user's CANDLE_NUM_THREADS wins, and is reported.
        assert!(matches!(outcome, PoolOutcome::KeptForEnvironment(_)));
        return;
    }
    // 128 Ki values: above the 64 Ki at which candle hands elementwise ops to its pool.
    let a = Tensor::ones(131072, candle_core::DType::F32, &Device::Cpu).unwrap();
    let sum: f32 = (&a + &a).unwrap().sum_all().unwrap().to_scalar().unwrap();
    assert_eq!(sum, 262144.0);
    assert_eq!(candle_core::utils::barrier_pool().n_workers(), 0);
}
