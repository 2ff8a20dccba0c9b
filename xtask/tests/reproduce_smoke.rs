//! End to end: `cargo xtask reproduce table1 --profile smoke` on the shipped data
//! (../shared/datasets or $PIXREG_DATA_DIR), training the six smoke runs with the real
//! `pixreg` binary (built by the call). Asserts every expected cell is present and numeric,
//! CIFAR-100 is reported as unavailable, and the figures are SVG documents.

use std::time::Instant;

use xtask::assemble::Cell;
use xtask::{reproduce, resolve_data_dir, workspace_root, Launcher, ReproduceOptions};

#[test]
fn table1_smoke_end_to_end() {
    let root = workspace_root();
    let data_dir = resolve_data_dir(&root, None)
        .expect("the shipped datasets (../shared/datasets or $PIXREG_DATA_DIR) are required");
    let tmp = tempfile::tempdir().unwrap();
    let options = ReproduceOptions {
        table: "table1".into(),
        profile: "smoke".into(),
        seeds: None,
        first_seed: 0,
        jobs: 2,
        force: false,
        runs_dir: tmp.path().join("runs"),
        data_dir,
        out_dir: Some(tmp.path().join("out")),
        update_reference: false,
        pixreg: None,
        launcher: Launcher::Local,
        submit: false,
        slurm_args: Vec::new(),
        no_train: false,
        overrides: Vec::new(),
        rows: Vec::new(),
        variants: Vec::new(),
        progress_bar: false,
    };
    let started = Instant::now();
    let outcome = reproduce(&root, &options).unwrap();
    eprintln!("table1 smoke took {:.0} s", started.elapsed().as_secs_f64());
    assert!(
        outcome.report.failures.is_empty() && outcome.report.eval_failures.is_empty(),
        "{:?}",
        outcome.report
    );
    let table = outcome.table.unwrap();
    let labels: Vec<&str> = table.rows.iter().map(|r| r.dataset.as_str()).collect();
    assert_eq!(
        labels,
        ["mnist", "fashion-mnist", "cifar10-jpeg", "cifar100"]
    );
    for row in &table.rows {
        for variant in &row.variants {
            let names: Vec<&str> = variant.columns.iter().map(|c| c.column.as_str()).collect();
            assert_eq!(
                names,
                [
                    "clean",
                    "gaussian",
                    "uniform",
                    "saltpepper",
                    "fgsm",
                    "boundary"
                ]
            );
            for column in &variant.columns {
                let at = format!("{} / {} / {}", row.label, variant.name, column.column);
                if row.dataset == "cifar100" {
                    assert!(
                        matches!(&column.summary, Cell::Missing { missing } if missing.starts_with("data not available: ")),
                        "{at}: {:?}",
                        column.summary
                    );
                    continue;
                }
                match &column.summary {
                    Cell::Value { mean, .. } => assert!(mean.is_finite(), "{at}"),
                    Cell::Missing { missing } => panic!("{at}: {missing}"),
                }
                if column.column != "clean" && column.column != "boundary" {
                    assert_eq!(column.epsilons.len(), 10, "{at}: the paper's 10-point grid");
                    assert!(column
                        .curve
                        .iter()
                        .all(|c| c.mean().is_some_and(f64::is_finite)));
                }
            }
        }
    }
    // The captured child output (committed with the cpu profile's runs) names runs relative to
    // the runs folder, never by this machine's absolute path.
    let runs = &options.runs_dir;
    let logs: Vec<_> = std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".xtask.log"))
        .collect();
    assert_eq!(logs.len(), 6);
    for log in &logs {
        // log.txt follows the evaluation attack by attack and repeat by repeat.
        let run_log = runs.join(
            log.file_name()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".xtask.log"),
        );
        let run_log = std::fs::read_to_string(run_log.join("log.txt")).unwrap();
        assert!(
            run_log.contains("evaluating boundary (")
                && run_log.contains("): repeat 1/")
                && run_log.contains("evaluated boundary in "),
            "{}",
            log.display()
        );
        let text = std::fs::read_to_string(log).unwrap();
        assert!(text.contains("results in "), "{}: {text}", log.display());
        assert!(
            !text.contains(&*tmp.path().to_string_lossy()),
            "{} holds an absolute path: {text}",
            log.display()
        );
    }
    let out = &outcome.out_dir;
    for file in ["table.md", "table.csv", "table.json", "manifest.json"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["runs"].as_array().unwrap().len(), 6);
    assert!(manifest["git"]["commit"].is_string());
    // 3 rows × 4 curve columns, the Boundary bars, and one training-curve figure per row,
    // each as SVG and PNG.
    assert_eq!(outcome.figures.len(), 2 * (3 * 4 + 1 + 3));
    let training = out.join("figures/mnist-training.svg");
    let text = std::fs::read_to_string(&training).unwrap();
    assert!(
        text.contains("validation loss per epoch"),
        "{}",
        training.display()
    );
    for figure in outcome
        .figures
        .iter()
        .filter(|f| f.extension().unwrap() == "svg")
    {
        assert!(
            figure.with_extension("png").is_file(),
            "{}",
            figure.display()
        );
        let text = std::fs::read_to_string(figure).unwrap();
        let head = text.trim_start();
        assert!(
            head.starts_with("<svg") || head.starts_with("<?xml"),
            "{}",
            figure.display()
        );
        assert!(text.trim_end().ends_with("</svg>"), "{}", figure.display());
        assert!(
            text.contains("Accuracy (%)")
                || text.contains("squared L2")
                || text.contains("validation cross-entropy"),
            "{}: no axis title",
            figure.display()
        );
    }

    // A second call reuses every run and rewrites the same table.
    let again = reproduce(&root, &options).unwrap();
    assert_eq!(again.report.reused.len(), 6);
    assert!(again.report.wall_seconds.is_empty(), "nothing retrained");
}
