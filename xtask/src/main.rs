//! `cargo xtask`: project automation (see the library docs).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use pixreg_datasets::DatasetName;
use xtask::catalogue::Catalogue;
use xtask::fetch::{fetch_dataset, FetchOptions, Fetched};
use xtask::{reproduce, resolve_data_dir, workspace_root, Launcher, ReproduceOptions};

mod bench;

/// Project automation for pixreg.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the table catalogue (experiments/*.toml) and the profiles.
    List,
    /// Train, evaluate and assemble one table of the paper.
    Reproduce(ReproduceArgs),
    /// Training-step and per-op benchmarks of the CPU path.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Download datasets from their public sources (experiments/datasets.toml) and verify
    /// them against the shipped SHA256SUMS before they are put in place.
    FetchData(FetchDataArgs),
}

/// Arguments of `cargo xtask fetch-data`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    cargo xtask fetch-data\n  \
    cargo xtask fetch-data mnist fashion-mnist --dir ~/data")]
struct FetchDataArgs {
    /// Datasets (default: those the shipped profiles train on: mnist, fashion-mnist,
    /// cifar10-jpeg, tiny-imagenet).
    datasets: Vec<String>,
    /// Data directory, created when missing (default: $PIXREG_DATA_DIR, else
    /// ../shared/datasets beside the repository, where `cargo xtask reproduce` looks).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A base URL tried instead of the declared sources (a mirror holding the same file
    /// names).
    #[arg(long, value_name = "URL")]
    from: Option<String>,
    /// Seconds allowed for each file's download.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
}

/// Arguments of `cargo xtask reproduce`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    cargo xtask reproduce table1 --profile smoke\n  \
    cargo xtask reproduce table1 --jobs 2\n  \
    cargo xtask reproduce table2 --profile paper --launcher slurm --submit")]
struct ReproduceArgs {
    /// Table of the catalogue (`cargo xtask list`).
    table: String,
    /// Run-size profile: smoke, quick or paper (experiments/profiles.toml).
    #[arg(long, default_value = "quick")]
    profile: String,
    /// Seeds per model (default: the profile's); cells show mean ± std when above 1.
    #[arg(long)]
    seeds: Option<usize>,
    /// The first seed (default 0): `--first-seed 3 --seeds 3` is seeds 3–5 alone, e.g.
    /// fresh seeds for a comparison whose variant was selected on seeds 0–2 (the table goes
    /// to `<profile>[…]-seeds-3-5` beside the full one).
    #[arg(long, default_value_t = 0)]
    first_seed: usize,
    /// Runs trained in parallel.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Delete and redo the table's runs even when finished.
    #[arg(long)]
    force: bool,
    /// Folder of run folders (default: the profile's `runs_dir`, else runs/ at the repository
    /// root).
    #[arg(long)]
    runs_dir: Option<PathBuf>,
    /// Data directory (default: $PIXREG_DATA_DIR, else ../shared/datasets beside the repo).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output folder (default: results/<table>/<profile>, untracked; see --update-reference).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the table over the committed reference results in
    /// experiments/results/<table>/<profile> instead of the untracked results/.
    #[arg(long)]
    update_reference: bool,
    /// The pixreg binary (default: build it and use release/pixreg of $CARGO_TARGET_DIR, else
    /// of target/).
    #[arg(long)]
    pixreg: Option<PathBuf>,
    /// Where runs execute.
    #[arg(long, value_enum, default_value_t = Launcher::Local)]
    launcher: Launcher,
    /// With `--launcher slurm`: submit the generated scripts with sbatch.
    #[arg(long)]
    submit: bool,
    /// With `--launcher slurm`: an extra `#SBATCH` option for every job, e.g.
    /// `--slurm-arg=--partition=gpu --slurm-arg=--account=lab --slurm-arg=--mem=16G`
    /// (repeatable; after the profile's own).
    #[arg(long = "slurm-arg", value_name = "OPTION", allow_hyphen_values = true)]
    slurm_args: Vec<String>,
    /// Train nothing: evaluate FGSM of finished runs and assemble (the Slurm assembly job).
    #[arg(long)]
    no_train: bool,
    /// Override a value in every run config: `section.key=value` (TOML; repeatable),
    /// e.g. `--set device=cuda:0`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Only these rows, named by their task dataset (comma-separated), e.g.
    /// `--rows fashion-mnist`; the table goes to `<profile>-<rows>` beside the full one.
    #[arg(long, value_delimiter = ',')]
    rows: Vec<String>,
    /// Only these variants, named as the table names them (comma-separated; a comma inside
    /// parentheses belongs to the name), plus each row's surrogate baseline, e.g. `--variants
    /// "k 8,k 32,reference (range all, Th 0.8)"`: a table grows variant by variant; the
    /// partial table goes to `<profile>[-<rows>]-<variants>` beside the full one.
    #[arg(long)]
    variants: Vec<String>,
}

fn absolute(path: PathBuf) -> Result<PathBuf> {
    std::path::absolute(&path).with_context(|| format!("resolving {}", path.display()))
}

fn list() -> Result<()> {
    let catalogue = Catalogue::load(&workspace_root().join("experiments"))?;
    println!("Tables (cargo xtask reproduce <table> [--profile <profile>]):");
    for table in catalogue.tables.values() {
        println!("  {:<8} {}", table.name, table.title);
        println!("           {}", table.description);
        if let Some(figure) = &table.paper_figure {
            println!("           paper: {figure}");
        }
    }
    println!("\nProfiles:");
    for (name, profile) in &catalogue.profiles {
        println!(
            "  {:<8} {}",
            name,
            profile.description.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

fn fetch_data(args: FetchDataArgs) -> Result<()> {
    let root = workspace_root();
    let catalogue = Catalogue::load(&root.join("experiments"))?;
    let data_dir = match args.dir {
        Some(dir) => dir,
        None => match std::env::var_os(pixreg_datasets::DATA_DIR_ENV) {
            Some(env) if !env.is_empty() => PathBuf::from(env),
            _ => root
                .parent()
                .unwrap_or(&root)
                .join("shared")
                .join("datasets"),
        },
    };
    let names = if args.datasets.is_empty() {
        DEFAULT_FETCH.iter().map(|s| s.to_string()).collect()
    } else {
        args.datasets
    };
    let opts = FetchOptions {
        data_dir: absolute(data_dir)?,
        from: args.from,
        timeout_s: args.timeout,
    };
    let mut failed = Vec::new();
    for name in &names {
        let outcome = name
            .parse::<DatasetName>()
            .map_err(anyhow::Error::from)
            .and_then(|dataset| {
                let info = catalogue.dataset(dataset.as_str())?;
                fetch_dataset(dataset, info, &opts)
            });
        let dir = opts.data_dir.display();
        match outcome {
            Ok(Fetched::Present { verified }) => {
                println!("{name}: present in {dir}, {verified} file(s) match SHA256SUMS")
            }
            Ok(Fetched::Downloaded { verified: 0 }) => {
                println!("{name}: downloaded to {dir}; not verified (no sha256 of it is shipped)")
            }
            Ok(Fetched::Downloaded { verified }) => {
                println!("{name}: downloaded to {dir}, {verified} checksum(s) match")
            }
            Err(err) => failed.push((name.as_str(), err)),
        }
    }
    // One failure is the error itself (one line); several are each printed, then named.
    if failed.len() == 1 {
        return Err(failed.remove(0).1);
    }
    if !failed.is_empty() {
        for (_, err) in &failed {
            eprintln!("error: {err:#}");
        }
        let names: Vec<&str> = failed.iter().map(|(name, _)| *name).collect();
        anyhow::bail!("not fetched: {}", names.join(", "));
    }
    Ok(())
}

/// The datasets the shipped profiles need (`fetch-data` without arguments).
const DEFAULT_FETCH: [&str; 4] = ["mnist", "fashion-mnist", "cifar10-jpeg", "tiny-imagenet"];

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::List => list(),
        Command::Bench(cmd) => bench::run(&cmd),
        Command::FetchData(args) => fetch_data(args),
        Command::Reproduce(args) => {
            let root = workspace_root();
            let runs_dir = match args.runs_dir {
                Some(dir) => absolute(dir)?,
                None => {
                    let catalogue = Catalogue::load(&root.join("experiments"))?;
                    let profile = catalogue.profiles.get(&args.profile);
                    root.join(
                        profile
                            .and_then(|p| p.runs_dir.as_deref())
                            .unwrap_or("runs"),
                    )
                }
            };
            let options = ReproduceOptions {
                data_dir: resolve_data_dir(&root, args.data_dir.as_deref())?,
                table: args.table,
                profile: args.profile,
                seeds: args.seeds,
                first_seed: args.first_seed,
                jobs: args.jobs,
                force: args.force,
                runs_dir,
                out_dir: args.out.map(absolute).transpose()?,
                update_reference: args.update_reference,
                pixreg: args.pixreg.map(absolute).transpose()?,
                launcher: args.launcher,
                submit: args.submit,
                slurm_args: args.slurm_args,
                no_train: args.no_train,
                overrides: args.overrides,
                rows: args.rows,
                variants: args
                    .variants
                    .iter()
                    .flat_map(|list| xtask::plan::split_names(list))
                    .collect(),
                progress_bar: std::io::stderr().is_terminal(),
            };
            let outcome = reproduce(&root, &options)?;
            if let Some(table) = &outcome.table {
                println!("{}", xtask::assemble::headline_markdown(table));
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
