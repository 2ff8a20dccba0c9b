//! Planning, reuse, failure handling and assembly on a fake runs directory whose
//! `results.json` files are written by the test (no training).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pixreg_runner::attack::AttackName;
use serde_json::json;
use xtask::assemble::{assemble, csv, markdown, write_tables, Cell};
use xtask::exec::{execute, ExecOptions, ExecReport, Paths};
use xtask::figures::write_figures;
use xtask::plan::Plan;

/// Writes a finished run (layout 2, a fake best checkpoint) whose `results.json` (format 2,
/// every entry with the checkpoint's provenance) has accuracies shifted by `shift` (in [0, 1]
/// units; written in %).
fn fake_run(runs: &Path, id: &str, surrogate: Option<&str>, shift: f64) {
    let dir = runs.join(id);
    std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
    std::fs::write(dir.join("config.toml"), "").unwrap();
    std::fs::write(
        dir.join("state.json"),
        json!({"layout": 2, "status": "finished", "completed_epochs": 1, "best_epoch": 1,
               "best_valid_loss": 0.3, "seed": 0, "train_seconds": 12.5})
        .to_string(),
    )
    .unwrap();
    let best = dir.join("checkpoints/best-0001.safetensors");
    std::fs::write(&best, format!("weights of {id}")).unwrap();
    let sha = pixreg_runner::provenance::sha256_file(&best).unwrap();
    let provenance = json!({"checkpoint": "checkpoints/best-0001.safetensors",
        "checkpoint_sha256": sha, "epoch": 1, "pixreg_version": "0.1.0", "git_commit": "test",
        "evaluated_at": "2026-12-03T00:00:00Z", "provisional": false});
    let eps: Vec<f64> = (0..5).map(|i| 0.1 * i as f64).collect();
    let acc: Vec<f64> = (0..5)
        .map(|i| 100.0 * (0.9 - 0.1 * i as f64 + shift))
        .collect();
    let curve = json!({"attack": "Gaussian", "epsilons": eps, "accuracy": acc, "n_images": 100,
        "wall_seconds": 1.0, "provenance": provenance});
    let mut fgsm = curve.clone();
    if let Some(s) = surrogate {
        fgsm["surrogate"] = json!(s);
    }
    let decision = |m: f64| {
        json!({"mean_of_medians": m, "medians": [m], "success_rate": 100.0, "n_images": 10,
        "queries": 1000.0, "queries_per_second": 100.0, "repeats": [], "wall_seconds": 10.0,
        "provenance": provenance})
    };
    let results = json!({
        "format": 2,
        "run": id,
        "checkpoint": "checkpoints/best-0001.safetensors",
        "checkpoint_sha256": sha,
        "best_epoch": 1,
        "train_seconds": 12.5,
        "clean": {"test_acc": 100.0 * (0.9 + shift), "test_loss": 0.3, "provenance": provenance},
        "attacks": {
            "gaussian": curve,
            "uniform": curve,
            "saltpepper": curve,
            "fgsm": fgsm,
            "boundary": decision(0.01 + shift),
            "boundary-converged": decision(0.005 + shift),
            "hsj": decision(0.004 + shift),
            "pgd-linf": curve,
            "pgd-l2": curve,
        }
    });
    std::fs::write(dir.join("results.json"), results.to_string()).unwrap();
}

fn edit_results(paths: &Paths, id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = paths.run_dir(id).join("results.json");
    let mut results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut results);
    std::fs::write(&path, results.to_string()).unwrap();
}

#[test]
fn cells_that_break_an_invariant_or_come_from_another_checkpoint_are_flagged() {
    let (_tmp, paths) = setup();
    let plan = common::plan_table("table1", "smoke", Some(1), &paths.data_dir);
    fake_all(&plan, &paths.runs_dir);
    let (a, b, c) = (&plan.runs[0].id, &plan.runs[1].id, &plan.runs[2].id);
    // The stale curve of the issue: ε = 0 accuracy of an older model beside the clean one.
    edit_results(&paths, a, |r| {
        r["attacks"]["uniform"]["accuracy"][0] = json!(64.0)
    });
    // An entry of another checkpoint.
    edit_results(&paths, b, |r| {
        r["attacks"]["gaussian"]["provenance"]["checkpoint_sha256"] = json!("0".repeat(64))
    });
    // The checkpoint changed after the evaluation (re-trained in place).
    std::fs::write(
        paths.run_dir(c).join("checkpoints/best-0001.safetensors"),
        "other weights",
    )
    .unwrap();
    // Assembly alone (execute would try to re-evaluate what is stale, see below).
    let table = assemble(&plan, &paths, &ExecReport::default());
    let cell = |id: &str, column: &str| -> Cell {
        for row in &table.rows {
            for v in &row.variants {
                if v.runs.iter().any(|r| r == id) {
                    let k = table.columns.iter().position(|c| c == column).unwrap();
                    return v.columns[k].summary.clone();
                }
            }
        }
        panic!("run {id} not in the table");
    };
    let missing = |cell: Cell| match cell {
        Cell::Missing { missing } => missing,
        other => panic!("expected a flagged cell, got {other:?}"),
    };
    assert!(missing(cell(a, "uniform")).contains("at ε = 0 is 64.00 %"));
    assert!(
        cell(a, "gaussian").mean().is_some(),
        "the other cells stand"
    );
    assert!(missing(cell(b, "gaussian")).contains("another checkpoint"));
    for column in ["clean", "gaussian", "boundary"] {
        assert!(missing(cell(c, column)).starts_with("stale"), "{column}");
    }
    // xtask re-evaluates what is stale: every attack of the run whose checkpoint changed.
    let planned = &plan.runs[2];
    let mut expected = planned.attacks.clone();
    if planned.needs_fgsm {
        expected.push(AttackName::Fgsm);
    }
    assert_eq!(
        xtask::exec::missing_attacks(&paths.runs_dir, planned, None),
        expected
    );
    assert_eq!(
        xtask::exec::missing_attacks(
            &paths.runs_dir,
            &plan.runs[1],
            plan.runs[1].surrogate.map(|s| plan.runs[s].id.as_str())
        ),
        vec![AttackName::Gaussian]
    );
}

/// Fake results for every run of `plan` (seed-dependent shift so std > 0).
fn fake_all(plan: &Plan, runs: &Path) {
    for (i, run) in plan.runs.iter().enumerate() {
        let surrogate = run.surrogate.map(|s| plan.runs[s].id.as_str());
        fake_run(runs, &run.id, surrogate, 0.01 * (i % 2) as f64);
    }
}

fn setup() -> (tempfile::TempDir, Paths) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::fake_data_dir(&data);
    let paths = Paths {
        pixreg: tmp.path().join("no-such-pixreg"),
        runs_dir: tmp.path().join("runs"),
        data_dir: data,
    };
    (tmp, paths)
}

/// Execution options of these tests: no progress bar, never `--force`.
fn quiet_options(jobs: usize, train: bool) -> ExecOptions {
    ExecOptions {
        jobs,
        force: false,
        progress_bar: false,
        train,
    }
}

#[test]
fn plan_dedupes_and_orders_surrogates_first() {
    let (_tmp, paths) = setup();
    let plan = common::plan_table("table1", "smoke", None, &paths.data_dir);
    assert_eq!(plan.runs.len(), 6);
    for run in &plan.runs {
        if let Some(s) = run.surrogate {
            assert!(s < plan.runs.len());
            assert!(plan.runs[s].id.contains("-base-"));
            assert!(run.id.contains("-reg-"));
        }
        assert!(
            !run.config_toml.contains("fgsm"),
            "fgsm runs after training"
        );
    }
    let cifar100 = plan.rows.iter().find(|r| r.dataset == "cifar100").unwrap();
    let why = cifar100.unavailable.as_deref().unwrap();
    assert!(why.starts_with("data not available: "), "{why}");
    assert!(why.contains("<data>/cifar100/cifar-100-binary/"), "{why}");
    // table2: a task's baseline is one run shared by its rows.
    let plan2 = common::plan_table("table2", "smoke", None, &paths.data_dir);
    let bases = plan2
        .runs
        .iter()
        .filter(|r| r.id.contains("-base-"))
        .count();
    assert_eq!(bases, 3, "one baseline per available task");
    // Same inputs, same ids (reuse depends on it).
    let again = common::plan_table("table1", "smoke", None, &paths.data_dir);
    let ids: Vec<_> = plan.runs.iter().map(|r| &r.id).collect();
    assert_eq!(ids, again.runs.iter().map(|r| &r.id).collect::<Vec<_>>());
}

#[test]
fn assembles_mean_and_std_over_seeds() {
    let (tmp, paths) = setup();
    let plan = common::plan_table("table1", "smoke", Some(2), &paths.data_dir);
    fake_all(&plan, &paths.runs_dir);
    // Every run is finished with its FGSM: nothing to spawn, so the missing binary is fine.
    let report = execute(&plan, &paths, quiet_options(2, true)).unwrap();
    assert_eq!(report.reused.len(), plan.runs.len());
    assert!(report.failures.is_empty() && report.eval_failures.is_empty());
    let table = assemble(&plan, &paths, &report);
    let mnist = &table.rows[0];
    assert_eq!(mnist.dataset, "mnist");
    let clean = &mnist.variants[0].columns[0];
    match &clean.summary {
        Cell::Value { mean, std, sem, n } => {
            assert_eq!(*n, 2);
            assert!((mean - 90.5).abs() < 1e-9, "{mean}");
            assert!(std.unwrap() > 0.0);
            assert!((sem.unwrap() - std.unwrap() / 2f64.sqrt()).abs() < 1e-12);
        }
        other => panic!("{other:?}"),
    }
    let gaussian = &mnist.variants[0].columns[1];
    assert_eq!(gaussian.epsilons.len(), 5);
    // Grid mean without ε = 0: mean of 80, 70, 60, 50 (+0.5 from the seed shift).
    assert!((gaussian.summary.mean().unwrap() - 65.5).abs() < 1e-9);
    let md = markdown(&table);
    // Two seeds of 90 % and 91 %: mean ± SEM (std 0.71 / √2).
    assert!(md.contains("90.5 ± 0.5 (n=2)"), "{md}");
    assert!(
        md.contains("## Paired against the baseline: verdicts"),
        "{md}"
    );
    // The paper's numbers beside ours: a headline cell, and a point our (fake) grid lacks.
    assert!(md.contains("## The paper's numbers beside ours"), "{md}");
    let paper_clean = &table.paper[0];
    assert_eq!(
        (
            paper_clean.paper.dataset.as_str(),
            paper_clean.paper.column.as_str()
        ),
        ("mnist", "clean")
    );
    assert!((paper_clean.ours.mean().unwrap() - 90.5).abs() < 1e-9);
    let sigma = table
        .paper
        .iter()
        .find(|p| p.paper.epsilon == Some(0.5))
        .unwrap();
    assert!(
        matches!(&sigma.ours, Cell::Missing { missing } if missing.contains("no ε = 0.5")),
        "{:?}",
        sigma.ours
    );
    let paired = &mnist.paired[0];
    assert_eq!(paired.variant, "regularized");
    let clean_pair = &paired.columns[0];
    assert_eq!(
        (clean_pair.column.as_str(), clean_pair.kind.as_str()),
        ("clean", "ratio")
    );
    assert!(
        clean_pair.verdict.starts_with("keeps ≥ 0.9"),
        "{}",
        clean_pair.verdict
    );
    let boundary_pair = paired
        .columns
        .iter()
        .find(|c| c.column == "boundary")
        .unwrap();
    assert_eq!(boundary_pair.kind, "ratio");
    assert!(md.contains("| CIFAR-100 | all | data not available: "));
    assert!(md.contains("## Gaussian (%) at each ε"));
    let csv_text = csv(&table);
    assert!(csv_text.starts_with("row,dataset,variant,column,epsilon,mean,std,sem,n,runs,note\n"));
    // 3 rows × 2 variants × (clean + 4 curves × (1 + 5 ε) + boundary) + CIFAR-100's 2 × 6.
    assert_eq!(
        csv_text.lines().count(),
        1 + 3 * 2 * (1 + 4 * 6 + 1) + 2 * 6
    );
    let out = tmp.path().join("out");
    write_tables(&table, &out).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("table.json")).unwrap()).unwrap();
    assert_eq!(
        json["rows"][3]["variants"][0]["columns"][0]["summary"]["missing"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("data not available")
    );
    let figures = write_figures(&table, &out).unwrap();
    // Each figure as SVG and as the PNG rendering beside it.
    assert_eq!(figures.len(), 2 * (3 * 4 + 1));
    for f in figures.iter().filter(|f| f.extension().unwrap() == "png") {
        let png = std::fs::read(f).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{}", f.display());
        assert!(figures.contains(&f.with_extension("svg")));
    }
    for f in figures.iter().filter(|f| f.extension().unwrap() == "svg") {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.trim_start().starts_with("<svg") && text.trim_end().ends_with("</svg>"));
        assert!(
            text.contains("smoke: not a result") && text.contains("n = 2 seeds"),
            "{}: the title names the profile and the seeds",
            f.display()
        );
    }
}

#[test]
fn failed_run_is_reported_and_the_table_still_assembles() {
    let (tmp, mut paths) = setup();
    let plan = common::plan_table("table1", "smoke", None, &paths.data_dir);
    fake_all(&plan, &paths.runs_dir);
    // The regularized MNIST run is unfinished; the "pixreg" that should train it fails.
    let broken = plan
        .runs
        .iter()
        .find(|r| r.id.starts_with("mnist-reg-"))
        .unwrap();
    std::fs::remove_file(paths.run_dir(&broken.id).join("state.json")).unwrap();
    let stub = tmp.path().join("pixreg");
    std::fs::write(&stub, "#!/bin/sh\necho 'simulated crash' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    paths.pixreg = stub;
    let report = execute(&plan, &paths, quiet_options(1, true)).unwrap();
    let why = report.failures.get(&broken.id).expect("failure recorded");
    assert!(why.contains(".xtask.log"), "{why}");
    let log = std::fs::read_to_string(paths.log_file(&broken.id)).unwrap();
    assert!(log.contains("simulated crash"));
    let table = assemble(&plan, &paths, &report);
    let mnist = &table.rows[0];
    let reg = &mnist.variants[1];
    assert!(
        matches!(&reg.columns[0].summary, Cell::Missing { missing } if missing.starts_with("failed: "))
    );
    // The rest of the table is intact.
    assert!(mnist.variants[0].columns[0].summary.mean().is_some());
    assert!(table.rows[1].variants[1].columns[0]
        .summary
        .mean()
        .is_some());
}

#[test]
fn no_train_marks_unfinished_runs() {
    let (_tmp, paths) = setup();
    let plan = common::plan_table("table1", "smoke", None, &paths.data_dir);
    // One run stopped part-way (a folder without a finished state), the others never started.
    let partial = &plan.runs[1].id;
    std::fs::create_dir_all(paths.run_dir(partial)).unwrap();
    let report: ExecReport = execute(&plan, &paths, quiet_options(1, false)).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.untrained.len(), plan.runs.len());
    assert!(report.untrained[partial].starts_with("partly trained: "));
    let table = assemble(&plan, &paths, &report);
    let cell = &table.rows[0].variants[0].columns[0].summary;
    assert!(
        matches!(cell, Cell::Missing { missing } if missing.starts_with("not trained yet: ")),
        "{cell:?}"
    );
}

/// A catalogue with the repository's profiles and datasets plus one table file of the test's.
fn catalogue_with(table: &str) -> (tempfile::TempDir, xtask::catalogue::Catalogue) {
    let dir = tempfile::tempdir().unwrap();
    let repo = xtask::workspace_root().join("experiments");
    for f in ["profiles.toml", "datasets.toml"] {
        std::fs::copy(repo.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("table9.toml"), table).unwrap();
    let catalogue = xtask::catalogue::Catalogue::load(dir.path());
    match catalogue {
        Ok(c) => (dir, c),
        Err(e) => panic!("{e:#}"),
    }
}

fn plan_of(catalogue: &xtask::catalogue::Catalogue, data_dir: &Path) -> Plan {
    xtask::plan::plan(
        catalogue,
        xtask::plan::PlanRequest {
            table: "table9",
            profile: "smoke",
            seeds: None,
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

const HEADER: &str = "title = \"t\"\ndescription = \"d\"\ncolumns = [\"clean\", \"hsj\"]\n\
                      [[rows]]\ndataset = \"mnist\"\n";

#[test]
fn not_implemented_variants_say_so() {
    let (_tmp, paths) = setup();
    let (_dir, catalogue) = catalogue_with(&format!(
        "{HEADER}[[variants]]\nname = \"base\"\n[[variants]]\nname = \"later\"\n\
         not_implemented = \"needs a new option\"\n"
    ));
    let plan = plan_of(&catalogue, &paths.data_dir);
    let table = assemble(&plan, &paths, &ExecReport::default());
    let later = &table.rows[0].variants[1];
    assert!(later.runs.is_empty());
    for c in &later.columns {
        assert!(
            matches!(&c.summary, Cell::Missing { missing } if missing == "not implemented: needs a new option")
        );
    }
}

#[test]
fn swept_defenses_report_the_strength_closest_to_the_matched_clean_accuracy() {
    let (_tmp, paths) = setup();
    let plan = common::plan_table("table6", "smoke", None, &paths.data_dir);
    let mnist = &plan.rows[0];
    let variant = |name: &str| mnist.variants.iter().find(|v| v.name == name).unwrap();
    let noise = variant("Gaussian-noise augmentation");
    assert_eq!(noise.sweep.len(), 3);
    assert_eq!(noise.runs.len(), 3, "one run per strength and seed");
    let pgd = variant("PGD adversarial training");
    let pgd_config: toml::Table =
        toml::from_str(&plan.runs[pgd.sweep[2].runs[0]].config_toml).unwrap();
    assert_eq!(
        pgd_config["training"]["adversarial"]["epsilon"].as_float(),
        Some(0.3)
    );
    assert_eq!(
        pgd_config["training"]["adversarial"]["attack"].as_str(),
        Some("pgd")
    );
    assert_eq!(
        pgd_config["training"]["adversarial"]["steps"].as_integer(),
        Some(3),
        "the variant's smoke-profile refinement applies"
    );

    // Before the regularized run exists there is nothing to match.
    let table = assemble(&plan, &paths, &ExecReport::default());
    let waiting = &table.rows[0].variants[2].columns[0].summary;
    assert!(
        matches!(waiting, Cell::Missing { missing } if missing.starts_with("waiting for regularized")),
        "{waiting:?}"
    );

    // Regularized: 80 % clean; noise σ 0.1 / 0.2 / 0.4: 90, 82, 70 % → σ = 0.2 is reported.
    fake_all(&plan, &paths.runs_dir);
    let set_clean = |index: usize, shift: f64| {
        let id = &plan.runs[index].id;
        fake_run(&paths.runs_dir, id, None, shift);
    };
    set_clean(variant("regularized").runs[0], -0.1);
    for (point, shift) in noise.sweep.iter().zip([0.0, -0.08, -0.2]) {
        set_clean(point.runs[0], shift);
    }
    let table = assemble(&plan, &paths, &ExecReport::default());
    let result = table.rows[0]
        .variants
        .iter()
        .find(|v| v.name == "Gaussian-noise augmentation")
        .unwrap();
    assert_eq!(
        result.chosen.as_deref(),
        Some("training.noise_augmentation.std = 0.2")
    );
    assert_eq!(
        result.runs,
        vec![plan.runs[noise.sweep[1].runs[0]].id.clone()]
    );
    assert!((result.columns[0].summary.mean().unwrap() - 82.0).abs() < 1e-9);
    assert_eq!(result.label(), "Gaussian-noise augmentation (std = 0.2)");
    let md = markdown(&table);
    assert!(md.contains("## Matched clean accuracy"), "{md}");
    assert!(
        md.contains("| MNIST | Gaussian-noise augmentation | `training.noise_augmentation.std = 0.2` | 82.0 | 80.0 | yes |"),
        "{md}"
    );
    assert!(md.contains("| MNIST | Gaussian-noise augmentation (std = 0.2) | 82.0 |"));
}

#[test]
fn sweeps_are_checked_when_the_catalogue_loads() {
    let cases = [
        (
            "sweep = { key = \"training.lr\", values = [0.1] }\n",
            "go together",
        ),
        (
            "sweep = { key = \"training.lr\", values = [] }\nmatch_clean = \"base\"\n",
            "at least one value",
        ),
        (
            "sweep = { key = \"training.lr\", values = [0.1] }\nmatch_clean = \"nope\"\n",
            "not a variant of the row",
        ),
    ];
    for (extra, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let repo = xtask::workspace_root().join("experiments");
        for f in ["profiles.toml", "datasets.toml"] {
            std::fs::copy(repo.join(f), dir.path().join(f)).unwrap();
        }
        let table = format!(
            "{HEADER}[[variants]]\nname = \"base\"\n[[variants]]\nname = \"swept\"\n{extra}"
        );
        std::fs::write(dir.path().join("table9.toml"), table).unwrap();
        let err = xtask::catalogue::Catalogue::load(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains(expected), "{err:#}");
    }
}

#[test]
fn paper_values_naming_no_row_variant_or_column_are_refused_when_the_catalogue_loads() {
    let paper = |dataset: &str, row: &str, variant: &str, column: &str| {
        format!(
            "[[paper]]\ndataset = \"{dataset}\"\n{row}variant = \"{variant}\"\ncolumn = \"{column}\"\nvalue = 1.0\nsource = \"Fig. 0\"\n"
        )
    };
    let cases = [
        (
            paper("fashion-mnist", "", "base", "clean"),
            "no row of `fashion-mnist`",
        ),
        (
            paper("mnist", "row = \"Other\"\n", "base", "clean"),
            "labelled `Other`",
        ),
        (
            paper("mnist", "", "bsae", "clean"),
            "`bsae` is not a variant",
        ),
        (
            paper("mnist", "", "base", "gausian"),
            "`gausian` is not a column",
        ),
    ];
    let table = |extra: &str| format!("{HEADER}[[variants]]\nname = \"base\"\n\n{extra}");
    for (extra, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let repo = xtask::workspace_root().join("experiments");
        for f in ["profiles.toml", "datasets.toml"] {
            std::fs::copy(repo.join(f), dir.path().join(f)).unwrap();
        }
        std::fs::write(dir.path().join("table9.toml"), table(&extra)).unwrap();
        let err = xtask::catalogue::Catalogue::load(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains(expected), "{err:#}");
    }
    // The same value, spelt right, loads (the row by its default label too).
    catalogue_with(&table(&paper(
        "mnist",
        "row = \"MNIST\"\n",
        "base",
        "clean",
    )));
}

#[test]
fn reused_runs_are_evaluated_with_the_attacks_they_lack() {
    let (_tmp, paths) = setup();
    let plan = common::plan_table("table6", "smoke", None, &paths.data_dir);
    let run = &plan.runs[0];
    assert!(run.attacks.contains(&AttackName::Hsj));
    fake_run(&paths.runs_dir, &run.id, None, 0.0);
    assert!(xtask::exec::missing_attacks(&paths.runs_dir, run, None).is_empty());
    let results_path = paths.run_dir(&run.id).join("results.json");
    let mut results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&results_path).unwrap()).unwrap();
    results["attacks"].as_object_mut().unwrap().remove("hsj");
    std::fs::write(&results_path, results.to_string()).unwrap();
    assert_eq!(
        xtask::exec::missing_attacks(&paths.runs_dir, run, None),
        vec![AttackName::Hsj]
    );

    // execute() runs `pixreg eval` for it with the table's evaluation settings.
    let tmp = tempfile::tempdir().unwrap();
    let args_file = tmp.path().join("args");
    let stub = tmp.path().join("pixreg");
    std::fs::write(
        &stub,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", args_file.display()),
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let single = Plan {
        runs: vec![run.clone()],
        rows: Vec::new(),
        ..plan.clone()
    };
    let stubbed = Paths {
        pixreg: stub,
        ..paths.clone()
    };
    let report = execute(&single, &stubbed, quiet_options(1, false)).unwrap();
    assert!(report.failures.is_empty() && report.eval_failures.is_empty());
    let args = std::fs::read_to_string(&args_file).unwrap();
    assert!(args.starts_with("eval --run "), "{args}");
    assert!(args.contains("--attacks hsj "), "{args}");
    assert!(
        args.contains("--set evaluation.boundary_images=5"),
        "{args}"
    );
    assert!(!args.contains("evaluation.attacks"), "{args}");

    let mut with_fgsm = run.clone();
    with_fgsm.needs_fgsm = true;
    assert_eq!(
        xtask::exec::missing_attacks(&paths.runs_dir, &with_fgsm, Some("another-run")),
        vec![AttackName::Hsj, AttackName::Fgsm],
        "an FGSM result from another surrogate does not count"
    );
}

#[test]
fn a_table_of_some_variants_shows_the_paper_numbers_of_those_only() {
    let (_tmp, paths) = setup();
    let variants = vec!["N 100".to_string()];
    let plan = xtask::plan::plan(
        &common::catalogue(),
        xtask::plan::PlanRequest {
            table: "table3",
            profile: "smoke",
            seeds: None,
            first_seed: 0,
            overrides: &[],
            data_dir: &paths.data_dir,
            data_dir_label: "<data>",
            rows: &[],
            variants: &variants,
        },
    )
    .unwrap();
    fake_all(&plan, &paths.runs_dir);
    let report = execute(&plan, &paths, quiet_options(1, true)).unwrap();
    let table = assemble(&plan, &paths, &report);
    let shown: Vec<&str> = table
        .paper
        .iter()
        .map(|p| p.paper.variant.as_str())
        .collect();
    assert_eq!(
        shown,
        ["N 100"],
        "table3 has paper values for k, N and the ranges"
    );
    assert!(table.paper[0].ours.mean().is_some());
}

#[test]
fn bad_names_are_clear_errors() {
    let (_tmp, paths) = setup();
    let catalogue = common::catalogue();
    let request = |table, profile| xtask::plan::PlanRequest {
        table,
        profile,
        seeds: None,
        first_seed: 0,
        overrides: &[],
        data_dir: &paths.data_dir,
        data_dir_label: "<data>",
        rows: &[],
        variants: &[],
    };
    let err = xtask::plan::plan(&catalogue, request("table99", "smoke")).unwrap_err();
    assert!(format!("{err:#}").contains("unknown table `table99`"));
    let err = xtask::plan::plan(&catalogue, request("table1", "fast")).unwrap_err();
    assert!(format!("{err:#}").contains("unknown profile `fast`"));

    let plan_rows = |names: &[&str]| {
        let rows: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        xtask::plan::plan(
            &catalogue,
            xtask::plan::PlanRequest {
                rows: &rows,
                ..request("table6", "smoke")
            },
        )
    };
    let plan = plan_rows(&["fashion-mnist"]).unwrap();
    assert_eq!(plan.rows.len(), 1);
    assert!(plan.runs.iter().all(|r| r.id.starts_with("fashion-mnist-")));
    let err = plan_rows(&["svhn"]).unwrap_err();
    assert!(format!("{err:#}").contains("has no row for it"), "{err:#}");

    let plan_variants = |names: &[&str]| {
        let variants: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        xtask::plan::plan(
            &catalogue,
            xtask::plan::PlanRequest {
                variants: &variants,
                ..request("table3", "smoke")
            },
        )
    };
    let full = plan_variants(&[]).unwrap();
    let part = plan_variants(&["k 8", "boosting off"]).unwrap();
    let names: Vec<&str> = part.rows[0]
        .variants
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["baseline", "k 8", "boosting off"],
        "the surrogate stays"
    );
    assert!(part.runs.len() < full.runs.len());
    for run in &part.runs {
        assert!(
            full.runs.iter().any(|r| r.id == run.id),
            "same ids as the full table"
        );
    }
    let err = plan_variants(&["k 9"]).unwrap_err();
    assert!(
        format!("{err:#}").contains("has no variant of that name"),
        "{err:#}"
    );
    assert_eq!(
        xtask::plan::slug("range double (Th2 0.4)"),
        "range-double-th2-0-4"
    );
    // Names with commas of their own survive the comma-separated flag (and its round trip
    // through the Slurm assembly job, which joins them with commas again).
    let names = xtask::plan::split_names("k 8, reference (range all, Th 0.8),,N 100");
    assert_eq!(names, ["k 8", "reference (range all, Th 0.8)", "N 100"]);
    assert_eq!(xtask::plan::split_names(&names.join(",")), names);
    let part = plan_variants(&[&names[1]]).unwrap();
    assert_eq!(
        part.rows[0].variants.len(),
        2,
        "the reference and the surrogate"
    );
}

#[test]
fn overrides_reach_the_right_runs() {
    let (_tmp, paths) = setup();
    let catalogue = common::catalogue();
    let overrides = [
        "device=cuda:0".to_string(),
        "regularization.alpha=2.5".to_string(),
    ];
    // Planning a GPU config works on a machine without one (Slurm login nodes).
    let plan = xtask::plan::plan(
        &catalogue,
        xtask::plan::PlanRequest {
            table: "table1",
            profile: "smoke",
            seeds: None,
            first_seed: 0,
            overrides: &overrides,
            data_dir: &paths.data_dir,
            data_dir_label: "<data>",
            rows: &[],
            variants: &[],
        },
    )
    .unwrap();
    let cpu = common::plan_table("table1", "smoke", None, &paths.data_dir);
    for (gpu_run, cpu_run) in plan.runs.iter().zip(&cpu.runs) {
        assert_ne!(gpu_run.id, cpu_run.id, "the device is part of the run id");
        let config: toml::Table = toml::from_str(&gpu_run.config_toml).unwrap();
        assert_eq!(config["device"].as_str(), Some("cuda:0"));
        match config.get("regularization") {
            Some(reg) => assert_eq!(reg["alpha"].as_float(), Some(2.5)),
            None => assert!(
                gpu_run.id.contains("-base-"),
                "baselines stay unregularized"
            ),
        }
    }
}

#[test]
fn corruption_band_columns_read_severity_four_of_the_corruptions_report() {
    let table = "title = \"t\"\ndescription = \"d\"\n\
                 columns = [\"clean\", \"corruptions-low\", \"corruptions-high\", \"corruptions\"]\n\
                 [[variants]]\nname = \"baseline\"\n[[rows]]\ndataset = \"mnist\"\n";
    let (_dir, catalogue) = catalogue_with(table);
    let (_tmp, paths) = setup();
    let plan = plan_of(&catalogue, &paths.data_dir);
    // The three columns need one evaluation, run once at the end of training.
    assert_eq!(plan.runs[0].attacks, vec![AttackName::Corruptions]);
    fake_all(&plan, &paths.runs_dir);
    let id = plan.runs[0].id.clone();
    edit_results(&paths, &id, |r| {
        let provenance = r["clean"]["provenance"].clone();
        r["attacks"]["corruptions"] = json!({
            "mean_corrupted_accuracy": 60.0,
            "clean_accuracy": 90.0,
            "entries": [],
            "wall_seconds": 1.0,
            "n_images": 100,
            "by_band": [
                {"band": "low", "severity": 4, "accuracy": 71.0},
                {"band": "low", "severity": 5, "accuracy": 11.0},
                {"band": "high", "severity": 4, "accuracy": 43.0},
            ],
            "provenance": provenance,
        });
    });
    let report = execute(&plan, &paths, quiet_options(1, false)).unwrap();
    let result = assemble(&plan, &paths, &report);
    let cells: Vec<Option<f64>> = result.rows[0].variants[0]
        .columns
        .iter()
        .map(|c| c.summary.mean())
        .collect();
    assert_eq!(cells, vec![Some(90.0), Some(71.0), Some(43.0), Some(60.0)]);
    assert!(markdown(&result).contains("Low-freq. corruptions, sev. 4 (%)"));

    // A report without the severity-4 band says so instead of showing another severity.
    edit_results(&paths, &id, |r| {
        r["attacks"]["corruptions"]["by_band"] = json!([
            {"band": "low", "severity": 5, "accuracy": 11.0},
        ]);
    });
    let result = assemble(&plan, &paths, &report);
    match &result.rows[0].variants[0].columns[1].summary {
        Cell::Missing { missing } => assert!(missing.contains("no severity-4"), "{missing}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_variant_takes_the_settings_another_tables_rule_selected() {
    let (_tmp, paths) = setup();
    let dir = tempfile::tempdir().unwrap();
    let repo = xtask::workspace_root().join("experiments");
    for f in ["profiles.toml", "datasets.toml"] {
        std::fs::copy(repo.join(f), dir.path().join(f)).unwrap();
    }
    let grid = "title = \"grid\"\ndescription = \"d\"\ncolumns = [\"clean\", \"gaussian\"]\n\
                selection = { min_clean_ratio = 0.9, column = \"gaussian\", epsilon = 0.5 }\n\
                [[variants]]\nname = \"baseline\"\nsurrogate = true\n\
                [[variants]]\nname = \"α 4\"\nconfig = { regularization = { alpha = 4.0 } }\n\
                [[variants]]\nname = \"α 20\"\nconfig = { regularization = { alpha = 20.0 } }\n\
                [[rows]]\ndataset = \"mnist\"\n";
    let user = "title = \"user\"\ndescription = \"d\"\ncolumns = [\"clean\"]\n\
                [[variants]]\nname = \"baseline\"\nsurrogate = true\n\
                [[variants]]\nname = \"picked\"\nselected_from = \"table97\"\n\
                config = { regularization = { n_images = 100 } }\n\
                [[rows]]\ndataset = \"mnist\"\n";
    std::fs::write(dir.path().join("table97.toml"), grid).unwrap();
    std::fs::write(dir.path().join("table98.toml"), user).unwrap();
    let catalogue = xtask::catalogue::Catalogue::load(dir.path()).unwrap();
    let plan = || {
        xtask::plan::plan(
            &catalogue,
            xtask::plan::PlanRequest {
                table: "table98",
                profile: "smoke",
                seeds: Some(2),
                first_seed: 0,
                overrides: &[],
                data_dir: &paths.data_dir,
                data_dir_label: "<data>",
                rows: &[],
                variants: &[],
            },
        )
        .unwrap()
    };
    // No committed grid result yet: the variant waits and trains nothing.
    let waiting = plan();
    let picked = &waiting.rows[0].variants[1];
    assert!(picked.runs.is_empty());
    assert!(
        picked
            .waiting
            .as_deref()
            .unwrap()
            .contains("waiting for table97"),
        "{:?}",
        picked.waiting
    );
    let result_dir = dir.path().join("results/table97/smoke");
    std::fs::create_dir_all(&result_dir).unwrap();
    let write = |selected: serde_json::Value| {
        let json = serde_json::json!({
            "rows": [{ "dataset": "mnist", "selection": { "selected": selected } }]
        });
        std::fs::write(result_dir.join("table.json"), json.to_string()).unwrap();
    };
    write(serde_json::Value::Null);
    let none = plan();
    assert!(none.rows[0].variants[1].runs.is_empty());
    assert!(none.rows[0].variants[1]
        .waiting
        .as_deref()
        .unwrap()
        .contains("selects nothing"));
    // A selection: the grid's settings under the variant's own.
    write("α 20".into());
    let chosen = plan();
    let picked = &chosen.rows[0].variants[1];
    assert_eq!(picked.runs.len(), 2);
    assert!(picked.waiting.is_none());
    let config = &chosen.runs[picked.runs[0]].config_toml;
    assert!(config.contains("alpha = 20.0"), "{config}");
    assert!(config.contains("n_images = 100"), "{config}");

    // A table that is not one, or has no rule, is refused when the catalogue loads.
    let bad = user.replace("table97", "table96");
    std::fs::write(dir.path().join("table98.toml"), bad).unwrap();
    let err = xtask::catalogue::Catalogue::load(dir.path()).unwrap_err();
    assert!(format!("{err:#}").contains("is not a table"), "{err:#}");
    let no_rule = user.replace("table97", "table98");
    std::fs::write(dir.path().join("table98.toml"), no_rule).unwrap();
    let err = xtask::catalogue::Catalogue::load(dir.path()).unwrap_err();
    assert!(format!("{err:#}").contains("no selection rule"), "{err:#}");
}

#[test]
fn first_seed_plans_fresh_seeds_and_names_them() {
    let (_tmp, paths) = setup();
    let request = xtask::plan::PlanRequest {
        table: "table1",
        profile: "smoke",
        seeds: Some(2),
        first_seed: 3,
        overrides: &[],
        data_dir: &paths.data_dir,
        data_dir_label: "<data>",
        rows: &[],
        variants: &[],
    };
    let plan = xtask::plan::plan(&common::catalogue(), request).unwrap();
    let seed = |config: &str| {
        let config: toml::Table = toml::from_str(config).unwrap();
        config["training"]["seed"].as_integer().unwrap()
    };
    let seeds: std::collections::BTreeSet<i64> =
        plan.runs.iter().map(|r| seed(&r.config_toml)).collect();
    assert_eq!(seeds, [3, 4].into());
    let from_zero = common::plan_table("table1", "smoke", Some(2), &paths.data_dir);
    assert!(plan
        .runs
        .iter()
        .all(|r| from_zero.runs.iter().all(|z| z.id != r.id)));
    fake_all(&plan, &paths.runs_dir);
    let report = execute(&plan, &paths, quiet_options(2, true)).unwrap();
    let md = markdown(&assemble(&plan, &paths, &report));
    assert!(
        md.contains("(profile `smoke`, 2 seeds (3–4), mean ± SEM)"),
        "{md}"
    );
}
