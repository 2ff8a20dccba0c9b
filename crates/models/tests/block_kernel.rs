//! The fused basic-block kernel (`ops::basic_block_train_segments`) against the same block
//! composed of the fused conv + batch-norm and add + ReLU kernels: the same arithmetic in the
//! same order, so outputs, batch moments and every gradient must be bit-identical.

mod common;

use candle_core::{Tensor, Var};
use common::random;
use pixreg_models::ops::{self, BatchMoments, ConvBnSpec, ConvSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// One convolution + batch norm of the block.
struct Layer {
    w: Var,
    gamma: Var,
    beta: Var,
    stride: usize,
    padding: usize,
}

impl Layer {
    fn random(rng: &mut ChaCha8Rng, (o, c, k): (usize, usize, usize), stride: usize) -> Self {
        let gamma = (random(rng, &[o]) + 1.5).unwrap();
        Self {
            w: Var::from_tensor(&random(rng, &[o, c, k, k])).unwrap(),
            gamma: Var::from_tensor(&gamma).unwrap(),
            beta: Var::from_tensor(&random(rng, &[o])).unwrap(),
            stride,
            padding: k / 2,
        }
    }

    fn spec(&self) -> ConvBnSpec<'_> {
        ConvBnSpec {
            conv: ConvSpec {
                weight: self.w.as_tensor(),
                stride: self.stride,
                padding: self.padding,
            },
            weight: self.gamma.as_tensor(),
            bias: self.beta.as_tensor(),
        }
    }

    fn forward(&self, x: &Tensor, relu: bool, segments: &[usize]) -> (Tensor, Vec<BatchMoments>) {
        let spec = self.spec();
        ops::conv2d_batch_norm_train_segments(
            x,
            spec.conv,
            spec.weight,
            spec.bias,
            1e-5,
            relu,
            segments,
        )
        .unwrap()
    }

    fn vars(&self) -> [&Var; 3] {
        [&self.w, &self.gamma, &self.beta]
    }
}

fn assert_same_moments(what: &str, a: &[BatchMoments], b: &[BatchMoments]) {
    assert_eq!(a.len(), b.len(), "{what}: segments");
    for (a, b) in a.iter().zip(b) {
        assert_eq!(values(&a.mean), values(&b.mean), "{what}: mean");
        assert_eq!(
            values(&a.var_unbiased),
            values(&b.var_unbiased),
            "{what}: variance"
        );
    }
}

/// `(n, c, h, w, o, stride, segments)`.
type BlockCase = (usize, usize, usize, usize, usize, usize, &'static [usize]);

#[test]
fn fused_basic_block_is_bit_identical_to_its_layers() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    // (n, c, h, w, o, stride, segments): identity shortcuts below and above the Winograd
    // cut-off (16 channels), projections with stride 2 and 1, odd maps, several segments.
    let cases: [BlockCase; 5] = [
        (4, 8, 9, 7, 8, 1, &[4]),
        (6, 16, 8, 8, 16, 1, &[4, 2]),
        (5, 8, 9, 9, 16, 2, &[2, 3]),
        (3, 4, 6, 5, 6, 1, &[3]),
        (4, 16, 7, 7, 32, 2, &[1, 3]),
    ];
    for (n, c, h, w, o, stride, segments) in cases {
        let case = format!("{:?}", (n, c, h, w, o, stride, segments));
        let x = Var::from_tensor(&random(&mut rng, &[n, c, h, w])).unwrap();
        let first = Layer::random(&mut rng, (o, c, 3), stride);
        let second = Layer::random(&mut rng, (o, o, 3), 1);
        let shortcut = (stride != 1 || c != o).then(|| Layer::random(&mut rng, (o, c, 1), stride));

        let (fused, moments) = ops::basic_block_train_segments(
            &x,
            (first.spec(), second.spec()),
            shortcut.as_ref().map(Layer::spec),
            1e-5,
            segments,
        )
        .unwrap()
        .expect("the fused kernel applies to a basic block on the CPU");

        let (h1, m0) = first.forward(&x, true, segments);
        let (a, m1) = second.forward(&h1, false, segments);
        let (skip, ms) = match &shortcut {
            Some(s) => s.forward(&x, false, segments),
            None => (x.as_tensor().clone(), Vec::new()),
        };
        let reference = ops::add_relu(&a, &skip).unwrap();

        assert_eq!(values(&fused), values(&reference), "output {case}");
        assert_same_moments(&format!("first {case}"), &moments.first, &m0);
        assert_same_moments(&format!("second {case}"), &moments.second, &m1);
        assert_same_moments(&format!("shortcut {case}"), &moments.shortcut, &ms);

        let g = random(&mut rng, fused.dims());
        let gf = (&fused * &g)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gr = (&reference * &g)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let mut vars = vec![&x];
        for layer in [Some(&first), Some(&second), shortcut.as_ref()]
            .into_iter()
            .flatten()
        {
            vars.extend(layer.vars());
        }
        for (i, var) in vars.into_iter().enumerate() {
            let (a, b) = (gf.get(var).unwrap(), gr.get(var).unwrap());
            assert_eq!(values(a), values(b), "gradient {i} {case}");
        }
    }
}

#[test]
fn blocks_the_kernel_does_not_cover_fall_back_and_bad_segments_are_errors() {
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let x = random(&mut rng, &[2, 4, 6, 6]);
    let first = Layer::random(&mut rng, (4, 4, 3), 1);
    let second = Layer::random(&mut rng, (4, 4, 3), 1);
    // A 1×1 second convolution is not a basic block: the caller composes it.
    let pointwise = Layer::random(&mut rng, (4, 4, 1), 1);
    let none =
        ops::basic_block_train_segments(&x, (first.spec(), pointwise.spec()), None, 1e-5, &[2])
            .unwrap();
    assert!(none.is_none());
    // An identity shortcut cannot change the channel count.
    let wider = Layer::random(&mut rng, (6, 4, 3), 1);
    let second_wide = Layer::random(&mut rng, (6, 6, 3), 1);
    let none =
        ops::basic_block_train_segments(&x, (wider.spec(), second_wide.spec()), None, 1e-5, &[2])
            .unwrap();
    assert!(none.is_none());
    let err = ops::basic_block_train_segments(&x, (first.spec(), second.spec()), None, 1e-5, &[3])
        .unwrap_err();
    assert!(
        err.to_string().contains("must add up to the batch"),
        "{err}"
    );
}

/// Deterministic `N(0, 1)`-like images.
fn images(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    random(&mut rng, &[shape.0, shape.1, shape.2, shape.3])
}

#[test]
fn inference_forward_is_bit_identical_to_the_eval_forward() {
    use pixreg_models::{Arch, ModelConfig, ResNet};
    // Width 8 on 28×28 (direct and im2col convolutions), width 16 on 32×32 (Winograd, with
    // single-image bands in the first section), width 4 with a bottleneck architecture.
    for (arch, base, side) in [
        (Arch::ResNet18, 8, 28),
        (Arch::ResNet18, 16, 32),
        (Arch::ResNet50, 4, 28),
    ] {
        let config = ModelConfig::new(arch, [1, side, side], 10, base);
        let mut model = ResNet::new(&config, 7, &candle_core::Device::Cpu).unwrap();
        // A training pass first, so the running statistics are not the initial ones.
        model.forward(&images((6, 1, side, side), 1)).unwrap();
        model.set_training(false);
        let x = images((5, 1, side, side), 2);
        let eval = model.forward_eval(&x).unwrap();
        let inference = model.forward_inference(&x).unwrap();
        assert_eq!(values(&inference), values(&eval), "{arch:?} width {base}");
        // With an input that needs its gradient (white-box attacks), the same gradient.
        let xv = Var::from_tensor(&x).unwrap();
        let grad = |logits: Tensor| {
            let g = logits.sum_all().unwrap().backward().unwrap();
            values(g.get(&xv).unwrap())
        };
        assert_eq!(
            grad(model.forward_inference(&xv).unwrap()),
            grad(model.forward_eval(&xv).unwrap()),
            "{arch:?} width {base}: input gradient"
        );
    }
}
