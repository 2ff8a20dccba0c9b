//! The declarative table catalogue in `experiments/`: `table<N>.toml` (rows, variants, columns),
//! `profiles.toml` (run sizes) and `datasets.toml` (labels, how to obtain missing data).
//!
//! Everything that differs between tables or profiles lives in those files, so adding an
//! ablation or resizing a profile never touches Rust code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use pixreg_attacks::FrequencyBand;
use pixreg_runner::attack::AttackName;
use serde::Deserialize;

/// Result columns a table may name besides attack names.
pub const SCALAR_COLUMNS: [&str; 5] = [
    "clean",
    "epoch_seconds",
    "train_seconds",
    "peak_rss_mib",
    "targets_seconds",
];

/// Columns read from the `corruptions` report: mean accuracy over each frequency band's
/// corruptions at [`BAND_SEVERITY`] (the paper's CIFAR-10-C grouping).
pub const BAND_COLUMNS: [(&str, FrequencyBand); 3] = [
    ("corruptions-low", FrequencyBand::Low),
    ("corruptions-medium", FrequencyBand::Medium),
    ("corruptions-high", FrequencyBand::High),
];

/// The severity of the band columns: the paper reports CIFAR-10-C at severity 4.
pub const BAND_SEVERITY: u8 = 4;

/// The evaluation whose report holds `column`: the attack itself, or `corruptions` for a band
/// column; `None` for a scalar column (or an unknown one).
pub fn attack_of(column: &str) -> Option<AttackName> {
    if BAND_COLUMNS.iter().any(|(name, _)| *name == column) {
        return Some(AttackName::Corruptions);
    }
    column.parse().ok()
}

/// One table of the catalogue (`experiments/<name>.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// File stem, filled in by [`Catalogue::load`].
    #[serde(skip)]
    pub name: String,
    /// Heading of the table.
    pub title: String,
    /// One-line description printed by `cargo xtask list`.
    pub description: String,
    /// Result columns, in order ([`SCALAR_COLUMNS`] or `pixreg eval` attack names).
    pub columns: Vec<String>,
    /// Config fragment merged into every run of the table.
    #[serde(default)]
    pub base: toml::Table,
    /// Variants of every row that does not list its own.
    #[serde(default)]
    pub variants: Vec<VariantSpec>,
    /// The rows.
    pub rows: Vec<RowSpec>,
    /// Table-specific refinements of the shared profiles.
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileSpec>,
    /// The paper figure(s) the table reproduces, e.g. `"Fig. 2, Fig. 5"`.
    #[serde(default)]
    pub paper_figure: Option<String>,
    /// The paper's numbers, printed beside ours (`../shared/specs/paper-claims.md`).
    #[serde(default)]
    pub paper: Vec<PaperValue>,
    /// A hyperparameter grid's selection rule (the paper's §4.2), applied per row.
    #[serde(default)]
    pub selection: Option<SelectionRule>,
}

/// The paper's §4.2 rule: among the regularized variants, keep those whose clean accuracy is
/// at least `min_clean_ratio` of the row's baseline and whose accuracy under `column` at
/// `epsilon` (high distortion) beats the baseline's; select the one that beats it most.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionRule {
    /// Least regularized/baseline clean-accuracy ratio (0.9 in the paper).
    pub min_clean_ratio: f64,
    /// The curve column of the robustness condition.
    pub column: String,
    /// The high-distortion ε of the condition (the grid point nearest to it is used).
    pub epsilon: f64,
}

/// One number the paper reports, in the unit of the table's column (accuracy in %, decision
/// medians as per-pixel squared L2).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PaperValue {
    /// Row (task dataset).
    pub dataset: String,
    /// The row's label, where a table has several rows of one dataset (table2's sources);
    /// absent: the first row of `dataset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<String>,
    /// Variant name.
    pub variant: String,
    /// Column.
    pub column: String,
    /// For a curve column, the ε of the point (unit scale); absent for a headline value.
    #[serde(default)]
    pub epsilon: Option<f64>,
    /// The paper's value.
    pub value: f64,
    /// Where it comes from and how exactly it was read.
    pub source: String,
}

/// One row: a classification task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowSpec {
    /// `task.dataset` of every run of the row.
    pub dataset: String,
    /// Row label; default: the dataset's label from `datasets.toml`.
    #[serde(default)]
    pub label: Option<String>,
    /// Config fragment for every run of the row.
    #[serde(default)]
    pub config: toml::Table,
    /// `[regularization]` fragment for the row's regularized runs only.
    #[serde(default)]
    pub regularization: toml::Table,
    /// Variants of this row (default: the table's).
    #[serde(default)]
    pub variants: Option<Vec<VariantSpec>>,
}

/// One model of a row (baseline, regularized, an ablation, a defense).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    /// Column header / legend entry.
    pub name: String,
    /// Config fragment; a `regularization` table (even empty) makes the run regularized.
    #[serde(default)]
    pub config: toml::Table,
    /// This variant's run is the row's FGSM surrogate (its own FGSM is white-box).
    #[serde(default)]
    pub surrogate: bool,
    /// The runner cannot train this variant yet; its cells say so and nothing runs.
    #[serde(default)]
    pub not_implemented: Option<String>,
    /// Train one run per value of a setting (e.g. the noise σ of a defense) and report the one
    /// whose clean accuracy is closest to that of the variant named by `match_clean`: the
    /// comparison "at matched clean accuracy".
    #[serde(default)]
    pub sweep: Option<SweepSpec>,
    /// The variant of the same row whose clean accuracy a swept variant is matched to.
    #[serde(default)]
    pub match_clean: Option<String>,
    /// Config fragments merged into this variant's runs under the named profile only (e.g.
    /// fewer PGD steps of adversarial training in the CPU profiles).
    #[serde(default)]
    pub profiles: BTreeMap<String, toml::Table>,
    /// Another table whose selection rule picks this variant's settings: the config of the
    /// variant that table's committed result (`experiments/results/<table>/<profile>/`)
    /// selected for the same dataset goes under this variant's own `config`. Until that
    /// table has selected one, the variant's cells say so and nothing runs.
    #[serde(default)]
    pub selected_from: Option<String>,
}

/// The swept setting of a variant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Dotted config key, e.g. `training.noise_augmentation.std`.
    pub key: String,
    /// The values tried.
    pub values: Vec<toml::Value>,
}

/// A run-size profile (`profiles.toml`, refined by a table's `[profiles.<name>]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// What the profile is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Seeds per run (overridden by `--seeds`).
    #[serde(default)]
    pub seeds: Option<usize>,
    /// Config fragment for every run.
    #[serde(default)]
    pub config: toml::Table,
    /// `[regularization]` fragment for regularized runs.
    #[serde(default)]
    pub regularization: toml::Table,
    /// Config fragments for runs whose task is the named dataset.
    #[serde(default)]
    pub datasets: BTreeMap<String, toml::Table>,
    /// `#SBATCH` options of the Slurm launcher (`--gres=gpu:1`, `--time=…`).
    #[serde(default)]
    pub sbatch: Vec<String>,
    /// Where its runs live by default, relative to the repository root (`runs` when unset):
    /// a reporting profile keeps its runs in the repository (`experiments/runs`), so a table
    /// grows seed by seed on whatever machine reproduces it.
    #[serde(default)]
    pub runs_dir: Option<String>,
}

impl ProfileSpec {
    /// `self` refined by `other` (other's values win).
    fn refined(&self, other: &ProfileSpec) -> ProfileSpec {
        let mut datasets = self.datasets.clone();
        for (name, table) in &other.datasets {
            merge(datasets.entry(name.clone()).or_default(), table);
        }
        let mut config = self.config.clone();
        merge(&mut config, &other.config);
        let mut regularization = self.regularization.clone();
        merge(&mut regularization, &other.regularization);
        ProfileSpec {
            description: other.description.clone().or(self.description.clone()),
            seeds: other.seeds.or(self.seeds),
            config,
            regularization,
            datasets,
            sbatch: if other.sbatch.is_empty() {
                self.sbatch.clone()
            } else {
                other.sbatch.clone()
            },
            runs_dir: other.runs_dir.clone().or(self.runs_dir.clone()),
        }
    }
}

/// A dataset's entry in `datasets.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetInfo {
    /// Label in tables and figures.
    pub label: String,
    /// Instruction printed in the row of a missing dataset.
    pub how_to_get: String,
    /// Where `cargo xtask fetch-data` downloads it from.
    #[serde(default)]
    pub download: Option<DownloadSpec>,
}

/// How a downloaded file becomes dataset files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Unpack {
    /// Kept as downloaded.
    #[serde(rename = "none")]
    None,
    /// Gunzipped to its name without `.gz`.
    #[serde(rename = "gunzip")]
    Gunzip,
    /// A gzipped tar extracted.
    #[serde(rename = "tar.gz")]
    TarGz,
    /// A zip archive extracted.
    #[serde(rename = "zip")]
    Zip,
}

/// A dataset's `download` table in `datasets.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadSpec {
    /// Base URLs, tried in order until one serves every file (each ends with `/`).
    pub base_urls: Vec<String>,
    /// File names appended to a base URL.
    pub files: Vec<String>,
    /// How each downloaded file is unpacked.
    pub unpack: Unpack,
    /// Folder (relative to the data directory) the unpacked files go to.
    pub into: String,
    /// Leading path components dropped from archive members (GitHub archives wrap everything
    /// in one folder).
    #[serde(default)]
    pub strip_components: usize,
    /// Archive members kept (path prefixes after stripping); default: all.
    #[serde(default)]
    pub keep: Vec<String>,
    /// Sha256 of the sorted `sha256sum` listing of the files under each named folder
    /// (relative to `into`).
    #[serde(default)]
    pub tree_sha256: BTreeMap<String, String>,
}

/// The whole catalogue.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// `experiments/`.
    pub dir: PathBuf,
    /// Tables by name, sorted.
    pub tables: BTreeMap<String, TableSpec>,
    /// Shared profiles by name.
    pub profiles: BTreeMap<String, ProfileSpec>,
    /// Dataset labels and instructions.
    pub datasets: BTreeMap<String, DatasetInfo>,
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("{} is not a valid catalogue file", path.display()))
}

impl Catalogue {
    /// Reads `dir/profiles.toml`, `dir/datasets.toml` and every `dir/table*.toml`.
    pub fn load(dir: &Path) -> Result<Catalogue> {
        let profiles = read_toml(&dir.join("profiles.toml"))?;
        let datasets = read_toml(&dir.join("datasets.toml"))?;
        let mut tables = BTreeMap::new();
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if stem.starts_with("table") && path.extension().is_some_and(|e| e == "toml") {
                let mut table: TableSpec = read_toml(&path)?;
                table.name = stem.to_string();
                tables.insert(stem.to_string(), table);
            }
        }
        let catalogue = Catalogue {
            dir: dir.to_path_buf(),
            tables,
            profiles,
            datasets,
        };
        catalogue.check()?;
        Ok(catalogue)
    }

    /// Rejects unknown columns, datasets and empty tables, so a typo fails before any run.
    fn check(&self) -> Result<()> {
        for table in self.tables.values() {
            let ctx = || format!("experiments/{}.toml", table.name);
            for column in &table.columns {
                if !SCALAR_COLUMNS.contains(&column.as_str()) && attack_of(column).is_none() {
                    let bands: Vec<&str> = BAND_COLUMNS.iter().map(|(name, _)| *name).collect();
                    bail!(
                        "{}: unknown column `{column}`; expected one of {}, {} or an attack ({})",
                        ctx(),
                        SCALAR_COLUMNS.join(", "),
                        bands.join(", "),
                        AttackName::list()
                    );
                }
            }
            if table.rows.is_empty() {
                bail!("{}: no rows", ctx());
            }
            for row in &table.rows {
                self.dataset(&row.dataset).with_context(ctx)?;
                let variants = row.variants.as_ref().unwrap_or(&table.variants);
                if variants.is_empty() {
                    bail!("{}: row {} has no variants", ctx(), row.dataset);
                }
                for v in variants {
                    let ctx = || format!("{}, row {}, variant {}", ctx(), row.dataset, v.name);
                    check_sweep(v, variants).with_context(ctx)?;
                    if let Some(source) = &v.selected_from {
                        let has_rule = self.tables.get(source).map(|t| t.selection.is_some());
                        match has_rule {
                            Some(true) => {}
                            Some(false) => {
                                bail!("{}: selected_from `{source}` has no selection rule", ctx())
                            }
                            None => bail!("{}: selected_from `{source}` is not a table", ctx()),
                        }
                    }
                }
            }
            self.check_paper(table)?;
        }
        Ok(())
    }

    /// Each of the paper's values must name a row of the table, a variant of that row and one
    /// of the table's columns: a misspelt name is an error when the catalogue loads, not a
    /// comparison missing from the table.
    fn check_paper(&self, table: &TableSpec) -> Result<()> {
        for p in &table.paper {
            let ctx = || {
                format!(
                    "experiments/{}.toml, paper value \"{}\"",
                    table.name, p.source
                )
            };
            let mut row = None;
            for r in table.rows.iter().filter(|r| r.dataset == p.dataset) {
                let label = self.row_label(r)?;
                if p.row.as_deref().is_none_or(|wanted| wanted == label) {
                    row = Some(r);
                    break;
                }
            }
            let Some(row) = row else {
                let which = p
                    .row
                    .as_deref()
                    .map_or(String::new(), |l| format!(" labelled `{l}`"));
                bail!("{}: the table has no row of `{}`{which}", ctx(), p.dataset);
            };
            let variants = row.variants.as_ref().unwrap_or(&table.variants);
            if !variants.iter().any(|v| v.name == p.variant) {
                bail!("{}: `{}` is not a variant of its row", ctx(), p.variant);
            }
            if !table.columns.contains(&p.column) {
                bail!("{}: `{}` is not a column of the table", ctx(), p.column);
            }
        }
        Ok(())
    }

    /// The table named `name`, with a helpful error listing the others.
    pub fn table(&self, name: &str) -> Result<&TableSpec> {
        self.tables.get(name).with_context(|| {
            format!(
                "unknown table `{name}`; the catalogue has {} (see `cargo xtask list`)",
                self.tables.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The profile `name` as refined by `table`.
    pub fn profile(&self, table: &TableSpec, name: &str) -> Result<ProfileSpec> {
        let shared = self.profiles.get(name).with_context(|| {
            format!(
                "unknown profile `{name}`; expected one of {}",
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        Ok(match table.profiles.get(name) {
            Some(refinement) => shared.refined(refinement),
            None => shared.clone(),
        })
    }

    /// A row's label in tables and figures: its own, else its dataset's.
    pub fn row_label<'a>(&'a self, row: &'a RowSpec) -> Result<&'a str> {
        match &row.label {
            Some(label) => Ok(label),
            None => Ok(&self.dataset(&row.dataset)?.label),
        }
    }

    /// `datasets.toml` entry of a dataset.
    pub fn dataset(&self, name: &str) -> Result<&DatasetInfo> {
        self.datasets
            .get(name)
            .with_context(|| format!("dataset `{name}` is not in experiments/datasets.toml"))
    }
}

/// A sweep needs a clean-accuracy target among the row's unswept variants, and vice versa.
fn check_sweep(variant: &VariantSpec, row_variants: &[VariantSpec]) -> Result<()> {
    match (&variant.sweep, &variant.match_clean) {
        (None, None) => Ok(()),
        (Some(_), None) | (None, Some(_)) => {
            bail!("`sweep` and `match_clean` go together")
        }
        (Some(_), Some(_)) if variant.surrogate => {
            bail!("a swept variant cannot be the FGSM surrogate")
        }
        (Some(sweep), Some(target)) => {
            if sweep.values.is_empty() || sweep.key.trim().is_empty() {
                bail!("the sweep needs a key and at least one value");
            }
            match row_variants.iter().find(|v| &v.name == target) {
                Some(t) if t.sweep.is_none() && t.name != variant.name => Ok(()),
                Some(_) => bail!("match_clean `{target}` must name another, unswept variant"),
                None => bail!("match_clean `{target}` is not a variant of the row"),
            }
        }
    }
}

/// Deep merge: tables merge key by key, anything else in `over` replaces `into`'s value.
pub fn merge(into: &mut toml::Table, over: &toml::Table) {
    for (key, value) in over {
        match (into.get_mut(key), value) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            _ => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}
