//! Helpers shared by the xtask tests: a fake data directory and planning table1.

use std::path::Path;

use xtask::catalogue::Catalogue;
use xtask::plan::{plan, Plan, PlanRequest};
use xtask::workspace_root;

/// A data directory where MNIST, Fashion-MNIST and the CIFAR-10 JPEG copy "exist" (empty files
/// with the expected names: planning only checks the layout) and CIFAR-100 does not.
pub fn fake_data_dir(dir: &Path) {
    for name in ["mnist", "fashion-mnist"] {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ] {
            std::fs::write(d.join(f), b"").unwrap();
        }
    }
    let d = dir.join("cifar10-jpeg");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("cifar10-jpeg-q75.tar.xz"), b"").unwrap();
}

/// The repository's catalogue.
pub fn catalogue() -> Catalogue {
    Catalogue::load(&workspace_root().join("experiments")).unwrap()
}

/// `table` under `profile` with `seeds` seeds against `data_dir`.
pub fn plan_table(table: &str, profile: &str, seeds: Option<usize>, data_dir: &Path) -> Plan {
    plan(
        &catalogue(),
        PlanRequest {
            table,
            profile,
            seeds,
            first_seed: 0,
            overrides: &[],
            data_dir,
            data_dir_label: "<data>",
            rows: &[],
            variants: &[],
        },
    )
    .unwrap()
}
