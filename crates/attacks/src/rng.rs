//! Seeded, independent random streams.
//!
//! Every image gets its own `ChaCha8Rng` stream derived from `(seed, purpose tag, image id)`, so
//! results depend only on the seed and on the image's id, never on how images are batched or
//! chunked for model queries.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// SplitMix64 finaliser: a good 64-bit mixing function.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Combine a seed with a purpose tag (attack kind, repeat, ε index, ...).
pub(crate) fn derive_seed(seed: u64, tag: u64) -> u64 {
    mix64(mix64(seed) ^ mix64(tag.wrapping_add(0x5851_F42D_4C95_7F2D)))
}

/// The independent stream of image `id` for a given (already derived) seed.
pub(crate) fn image_stream(seed: u64, id: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(id);
    rng
}
