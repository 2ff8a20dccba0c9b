//! Planning: a table × profile × seeds → the distinct runs to train (deduplicated by the
//! runner's config hash) and, for every cell, the runs it is computed from.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use pixreg_runner::attack::AttackName;
use pixreg_runner::config::ExperimentConfig;

use crate::catalogue::{merge, Catalogue, ProfileSpec, RowSpec, TableSpec, VariantSpec};
use crate::util::relative_to;

/// One `pixreg train` invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    /// Run id (`<dataset>-<base|reg>-<hash>`), the folder name under the runs directory.
    pub id: String,
    /// The experiment config given to `pixreg train` (its resolved form hashes to `id`).
    pub config_toml: String,
    /// Surrogate run (index into [`Plan::runs`]) for the transferred FGSM; `None`: white-box.
    pub surrogate: Option<usize>,
    /// The run is evaluated with FGSM after training.
    pub needs_fgsm: bool,
    /// Attacks besides FGSM that the table needs from the run (a reused run that lacks some
    /// is evaluated with them).
    pub attacks: Vec<AttackName>,
}

/// One variant of one row.
#[derive(Debug, Clone)]
pub struct VariantPlan {
    /// Name from the catalogue.
    pub name: String,
    /// Set when the runner cannot train it.
    pub not_implemented: Option<String>,
    /// Its run for each seed (indices into [`Plan::runs`]); for a swept variant, the runs of
    /// every sweep point.
    pub runs: Vec<usize>,
    /// The points of a swept variant (empty otherwise).
    pub sweep: Vec<SweepPoint>,
    /// The variant whose clean accuracy a swept variant is matched to.
    pub match_clean: Option<String>,
    /// Why a variant whose settings another table selects has no runs yet (that table has
    /// selected nothing for the row under this profile).
    pub waiting: Option<String>,
}

/// One value of a swept setting.
#[derive(Debug, Clone)]
pub struct SweepPoint {
    /// `key = value`, as shown in the table.
    pub setting: String,
    /// Its run for each seed (indices into [`Plan::runs`]).
    pub runs: Vec<usize>,
}

/// One row.
#[derive(Debug, Clone)]
pub struct RowPlan {
    /// Label.
    pub label: String,
    /// Task dataset.
    pub dataset: String,
    /// `data not available: …` when a dataset of the row is missing (no runs planned then).
    pub unavailable: Option<String>,
    /// Its variants.
    pub variants: Vec<VariantPlan>,
}

/// Everything `reproduce` needs to know before it starts.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The table.
    pub table: TableSpec,
    /// Profile name.
    pub profile: String,
    /// Seeds per variant.
    pub seeds: usize,
    /// The first of them (seeds `first_seed..first_seed + seeds`).
    pub first_seed: usize,
    /// Rows in catalogue order.
    pub rows: Vec<RowPlan>,
    /// Distinct runs, surrogates before the runs that need them.
    pub runs: Vec<PlannedRun>,
}

/// Attacks evaluated at the end of `pixreg train`: those the table's columns read (each once,
/// in column order) except FGSM, which needs the surrogate and runs afterwards.
pub fn training_attacks(table: &TableSpec) -> Vec<AttackName> {
    let mut attacks: Vec<AttackName> = Vec::new();
    for attack in table
        .columns
        .iter()
        .filter_map(|c| crate::catalogue::attack_of(c))
    {
        if attack != AttackName::Fgsm && !attacks.contains(&attack) {
            attacks.push(attack);
        }
    }
    attacks
}

/// Why a dataset is missing under `data_dir`, or `None` when it is there; the instruction
/// names the data directory as `data_dir_label` (relative, so committed tables hold no
/// machine paths).
pub fn missing_dataset(
    catalogue: &Catalogue,
    name: &str,
    data_dir: &Path,
    data_dir_label: &str,
) -> Result<Option<String>> {
    let parsed: pixreg_datasets::DatasetName =
        name.parse().with_context(|| format!("dataset `{name}`"))?;
    let found = pixreg_datasets::find_local(parsed, data_dir)
        .with_context(|| format!("looking for {name} in {}", data_dir.display()))?;
    Ok(match found {
        Some(_) => None,
        None => {
            let info = catalogue.dataset(name)?;
            let fetch = match info.download {
                Some(_) => format!("run `cargo xtask fetch-data {name}`, or "),
                None => String::new(),
            };
            Some(format!(
                "data not available: {} is missing ({fetch}{})",
                info.label,
                info.how_to_get.replace("<data-dir>", data_dir_label)
            ))
        }
    })
}

/// The runner's id of a config. The runner's validation opens the device, so a `cuda:N`
/// config is validated as `cpu` and hashed with its own device: plans for GPU clusters can be
/// made on a login node without one.
fn run_id(config: &toml::Table) -> Result<String> {
    let mut on_cpu = config.clone();
    on_cpu.insert("device".into(), "cpu".into());
    let mut resolved = ExperimentConfig::from_toml(&toml::to_string(&on_cpu)?, &[])?;
    if let Some(device) = config.get("device") {
        resolved.device = device
            .as_str()
            .context("device must be a string such as \"cuda:0\"")?
            .to_string();
    }
    resolved.run_id()
}

/// Sets `a.b.c = value` in a config table, as `pixreg train --set` does: the value is TOML,
/// or a bare string when it does not parse.
pub fn apply_override(table: &mut toml::Table, item: &str) -> Result<()> {
    let Some((key, raw)) = item.split_once('=') else {
        bail!("--set expects key=value, got `{item}`");
    };
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    set_dotted(table, key, value)
}

/// Merges `key = value` (dotted key) into a config table.
fn set_dotted(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let mut fragment = toml::Table::new();
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, parents) = parts.split_last().context("empty --set key")?;
    let mut current = &mut fragment;
    for part in parents {
        current = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .context("--set key")?;
    }
    current.insert(last.to_string(), value);
    merge(table, &fragment);
    Ok(())
}

/// What to plan.
#[derive(Debug, Clone, Copy)]
pub struct PlanRequest<'a> {
    /// Table name (`table1`, …).
    pub table: &'a str,
    /// Profile name.
    pub profile: &'a str,
    /// Seeds per variant; `None`: the profile's.
    pub seeds: Option<usize>,
    /// The first seed (`--first-seed`, usually 0).
    pub first_seed: usize,
    /// `key=value` overrides applied to every run config last (`--set`).
    pub overrides: &'a [String],
    /// Data directory, checked for every dataset a row needs.
    pub data_dir: &'a Path,
    /// How messages name the data directory.
    pub data_dir_label: &'a str,
    /// Plan only the rows of these task datasets (empty: every row).
    pub rows: &'a [String],
    /// Plan only these variants and the surrogates (empty: every variant).
    pub variants: &'a [String],
}

/// Plans a table under a profile, checking which datasets exist under the data directory.
pub fn plan(catalogue: &Catalogue, request: PlanRequest) -> Result<Plan> {
    let PlanRequest {
        table: table_name,
        profile: profile_name,
        seeds,
        first_seed,
        overrides,
        data_dir,
        data_dir_label,
        rows: only_rows,
        variants: only_variants,
    } = request;
    let mut table = catalogue.table(table_name)?.clone();
    select_rows(&mut table, only_rows)?;
    select_variants(&mut table, only_variants)?;
    let profile = catalogue.profile(&table, profile_name)?;
    let seeds = seeds.or(profile.seeds).unwrap_or(1);
    if seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let attacks = training_attacks(&table);
    let mut registry = RunRegistry {
        runs: Vec::new(),
        by_id: BTreeMap::new(),
        needs_fgsm: table.columns.iter().any(|c| c == "fgsm"),
        attacks: attacks.clone(),
    };
    let mut rows = Vec::new();
    for row in &table.rows {
        let label = catalogue.row_label(row)?.to_string();
        let declared = row.variants.as_ref().unwrap_or(&table.variants);
        let (variants, waiting) =
            resolve_row_variants(catalogue, declared, profile_name, &row.dataset)?;
        let configs = variants
            .iter()
            .map(|variant| {
                let layers = ConfigLayers {
                    table: &table,
                    profile: &profile,
                    profile_name,
                    overrides,
                    attacks: &attacks,
                };
                layers.config(row, variant)
            })
            .collect::<Result<Vec<_>>>()?;
        let unavailable =
            row_unavailable(catalogue, &row.dataset, &configs, data_dir, data_dir_label)?;
        // Surrogate per seed, once its run is planned: surrogate variants go first.
        let mut surrogates: Vec<Option<usize>> = vec![None; seeds];
        let mut order: Vec<usize> = (0..variants.len()).collect();
        order.sort_by_key(|&i| !variants[i].surrogate);
        let mut planned: Vec<Option<VariantPlan>> = vec![None; variants.len()];
        for i in order {
            let variant = &variants[i];
            let mut plan = VariantPlan {
                name: variant.name.clone(),
                not_implemented: variant.not_implemented.clone(),
                runs: Vec::new(),
                sweep: Vec::new(),
                match_clean: variant.match_clean.clone(),
                waiting: waiting[i].clone(),
            };
            if unavailable.is_none() && variant.not_implemented.is_none() && waiting[i].is_none() {
                let context = format!("{table_name}, row {label}, variant {}", variant.name);
                for (setting, point_config) in sweep_points(variant, &configs[i])? {
                    let mut point_runs = Vec::new();
                    for (seed, surrogate) in surrogates.iter_mut().enumerate() {
                        let config = with_seed(&point_config, first_seed + seed);
                        let wanted = if variant.surrogate { None } else { *surrogate };
                        let index = registry.add(&config, wanted, &context)?;
                        if variant.surrogate {
                            *surrogate = Some(index);
                        }
                        point_runs.push(index);
                    }
                    plan.runs.extend(&point_runs);
                    if let Some(setting) = setting {
                        plan.sweep.push(SweepPoint {
                            setting,
                            runs: point_runs,
                        });
                    }
                }
            }
            planned[i] = Some(plan);
        }
        rows.push(RowPlan {
            label,
            dataset: row.dataset.clone(),
            unavailable,
            variants: planned.into_iter().flatten().collect(),
        });
    }
    Ok(Plan {
        table,
        profile: profile_name.to_string(),
        seeds,
        first_seed,
        rows,
        runs: registry.runs,
    })
}

/// The row's variants with their `selected_from` settings resolved ([`resolve_selected`]),
/// and for each why it waits (`None`: it can run).
fn resolve_row_variants(
    catalogue: &Catalogue,
    declared: &[VariantSpec],
    profile: &str,
    dataset: &str,
) -> Result<(Vec<VariantSpec>, Vec<Option<String>>)> {
    let mut variants = Vec::with_capacity(declared.len());
    let mut waiting = Vec::with_capacity(declared.len());
    for variant in declared {
        match resolve_selected(catalogue, variant, profile, dataset)? {
            Ok(resolved) => {
                variants.push(resolved);
                waiting.push(None);
            }
            Err(why) => {
                variants.push(variant.clone());
                waiting.push(Some(why));
            }
        }
    }
    Ok((variants, waiting))
}

/// `variant` with the settings its `selected_from` table selected for `dataset` under
/// `profile` merged under its own config (`Ok(Ok(_))`; the variant itself when it has no
/// `selected_from`), or why there is no selection yet (`Ok(Err(why))`: that table's result is
/// missing, or its rule kept nothing).
fn resolve_selected(
    catalogue: &Catalogue,
    variant: &VariantSpec,
    profile: &str,
    dataset: &str,
) -> Result<std::result::Result<VariantSpec, String>> {
    let Some(source) = &variant.selected_from else {
        return Ok(Ok(variant.clone()));
    };
    let table = catalogue.table(source)?;
    let results = catalogue.dir.join("results").join(source);
    let candidates = [profile.to_string(), format!("{profile}-{dataset}")];
    let Some(file) = candidates
        .iter()
        .map(|name| results.join(name).join("table.json"))
        .find(|f| f.is_file())
    else {
        return Ok(Err(format!(
            "waiting for {source}'s selection (run `cargo xtask reproduce {source} --profile \
             {profile} --update-reference`)"
        )));
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a table result", file.display()))?;
    let selected = json["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["dataset"] == dataset)
        .and_then(|r| r["selection"]["selected"].as_str());
    let Some(name) = selected else {
        return Ok(Err(format!(
            "{source} ({}) selects nothing for {dataset} yet",
            relative_to(&file, &catalogue.dir).display()
        )));
    };
    let row = table.rows.iter().find(|r| r.dataset == dataset);
    let source_variants = row
        .and_then(|r| r.variants.as_ref())
        .unwrap_or(&table.variants);
    let chosen = source_variants
        .iter()
        .find(|v| v.name == name)
        .with_context(|| {
            format!(
                "{} selects `{name}`, which {source} no longer has",
                file.display()
            )
        })?;
    let mut resolved = variant.clone();
    resolved.config = chosen.config.clone();
    merge(&mut resolved.config, &variant.config);
    Ok(Ok(resolved))
}

/// Keeps only the rows `--rows` names (all when empty); an unknown name is an error listing
/// the table's rows.
fn select_rows(table: &mut TableSpec, only_rows: &[String]) -> Result<()> {
    if only_rows.is_empty() {
        return Ok(());
    }
    let datasets: Vec<&str> = table.rows.iter().map(|r| r.dataset.as_str()).collect();
    for name in only_rows {
        if !datasets.contains(&name.as_str()) {
            bail!(
                "--rows {name}: {} has no row for it (its rows: {})",
                table.name,
                datasets.join(", ")
            );
        }
    }
    table.rows.retain(|r| only_rows.contains(&r.dataset));
    Ok(())
}

/// The names of a `--variants` list: split at its commas, except those inside parentheses,
/// which belong to names such as `reference (range all, Th 0.8)`; each name trimmed, empty
/// ones dropped.
pub fn split_names(list: &str) -> Vec<String> {
    let (mut names, mut current, mut depth) = (Vec::new(), String::new(), 0usize);
    for ch in list.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                names.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(ch);
    }
    names.push(current);
    names
        .into_iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Keeps only the variants `--variants` names and the surrogates their FGSM columns and paired
/// differences need (all when empty), in every row; an unknown name is an error listing the
/// table's variants.
fn select_variants(table: &mut TableSpec, only: &[String]) -> Result<()> {
    if only.is_empty() {
        return Ok(());
    }
    let keep = |v: &VariantSpec| v.surrogate || only.contains(&v.name);
    let mut known: Vec<&str> = table.variants.iter().map(|v| v.name.as_str()).collect();
    for row in &table.rows {
        known.extend(row.variants.iter().flatten().map(|v| v.name.as_str()));
    }
    for name in only {
        if !known.contains(&name.as_str()) {
            bail!(
                "--variants {name}: {} has no variant of that name (its variants: {})",
                table.name,
                known.join(", ")
            );
        }
    }
    table.variants.retain(keep);
    for row in &mut table.rows {
        if let Some(variants) = &mut row.variants {
            variants.retain(keep);
        }
    }
    Ok(())
}

/// A variant name as part of a folder name: lowercase ASCII letters and digits, every other
/// run of characters one `-` (`"range double (Th2 0.4)"` → `range-double-th2-0-4`).
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// The layers a run config is merged from, in order: the table's base, the profile (and its
/// refinement for the row's dataset), the row, the variant (and its refinement for the
/// profile), the command line's overrides; then the regularization defaults, the task and
/// the attacks evaluated at the end of training.
struct ConfigLayers<'a> {
    table: &'a TableSpec,
    profile: &'a ProfileSpec,
    profile_name: &'a str,
    overrides: &'a [String],
    attacks: &'a [AttackName],
}

impl ConfigLayers<'_> {
    fn config(&self, row: &RowSpec, variant: &VariantSpec) -> Result<toml::Table> {
        let mut config = self.table.base.clone();
        merge(&mut config, &self.profile.config);
        if let Some(fragment) = self.profile.datasets.get(&row.dataset) {
            merge(&mut config, fragment);
        }
        merge(&mut config, &row.config);
        merge(&mut config, &variant.config);
        if let Some(fragment) = variant.profiles.get(self.profile_name) {
            merge(&mut config, fragment);
        }
        for item in self.overrides {
            // A regularization override refines regularized runs; it must not turn a
            // baseline into a regularized run.
            let regularization_key = item.trim_start().starts_with("regularization.");
            if !regularization_key || config.contains_key("regularization") {
                apply_override(&mut config, item)?;
            }
        }
        if let Some(toml::Value::Table(reg)) = config.get("regularization") {
            let mut merged = self.profile.regularization.clone();
            merge(&mut merged, &row.regularization);
            merge(&mut merged, reg);
            config.insert("regularization".into(), toml::Value::Table(merged));
        }
        let mut task = toml::Table::new();
        task.insert("dataset".into(), row.dataset.clone().into());
        let mut evaluation = toml::Table::new();
        let list: Vec<toml::Value> = self.attacks.iter().map(|a| a.as_str().into()).collect();
        evaluation.insert("attacks".into(), toml::Value::Array(list));
        merge(
            &mut config,
            &toml::Table::from_iter([
                ("task".to_string(), toml::Value::Table(task)),
                ("evaluation".to_string(), toml::Value::Table(evaluation)),
            ]),
        );
        Ok(config)
    }
}

/// Why a row cannot run (its dataset or a variant's regularization source is missing), or
/// `None`.
fn row_unavailable(
    catalogue: &Catalogue,
    dataset: &str,
    configs: &[toml::Table],
    data_dir: &Path,
    data_dir_label: &str,
) -> Result<Option<String>> {
    let mut needed: Vec<String> = vec![dataset.to_string()];
    for config in configs {
        if let Some(source) = config
            .get("regularization")
            .and_then(|r| r.get("source"))
            .and_then(|s| s.as_str())
        {
            if !needed.iter().any(|n| n == source) {
                needed.push(source.to_string());
            }
        }
    }
    let mut missing = Vec::new();
    for name in &needed {
        if let Some(why) = missing_dataset(catalogue, name, data_dir, data_dir_label)? {
            missing.push(why);
        }
    }
    Ok((!missing.is_empty()).then(|| missing.join("; ")))
}

/// A variant's configs: one, or one per value of its sweep (with the setting's label).
fn sweep_points(
    variant: &VariantSpec,
    config: &toml::Table,
) -> Result<Vec<(Option<String>, toml::Table)>> {
    match &variant.sweep {
        None => Ok(vec![(None, config.clone())]),
        Some(sweep) => sweep
            .values
            .iter()
            .map(|value| {
                let mut config = config.clone();
                set_dotted(&mut config, &sweep.key, value.clone())?;
                Ok((Some(format!("{} = {value}", sweep.key)), config))
            })
            .collect(),
    }
}

/// `config` with `training.seed = seed`.
fn with_seed(config: &toml::Table, seed: usize) -> toml::Table {
    let mut config = config.clone();
    let mut training = toml::Table::new();
    training.insert("seed".into(), toml::Value::Integer(seed as i64));
    merge(
        &mut config,
        &toml::Table::from_iter([("training".to_string(), toml::Value::Table(training))]),
    );
    config
}

/// The table's distinct runs: a config needed by several rows or variants is one run.
struct RunRegistry {
    runs: Vec<PlannedRun>,
    by_id: BTreeMap<String, usize>,
    needs_fgsm: bool,
    attacks: Vec<AttackName>,
}

impl RunRegistry {
    /// The index of the run of `config` (added when new); the same run needed with two
    /// different FGSM surrogates is an error naming `context`.
    fn add(
        &mut self,
        config: &toml::Table,
        surrogate: Option<usize>,
        context: &str,
    ) -> Result<usize> {
        let id = run_id(config).with_context(|| context.to_string())?;
        if let Some(&index) = self.by_id.get(&id) {
            if self.runs[index].surrogate != surrogate {
                bail!("run {id} is needed with two different FGSM surrogates ({context})");
            }
            return Ok(index);
        }
        self.runs.push(PlannedRun {
            id: id.clone(),
            config_toml: toml::to_string(config)?,
            surrogate,
            needs_fgsm: self.needs_fgsm,
            attacks: self.attacks.clone(),
        });
        self.by_id.insert(id, self.runs.len() - 1);
        Ok(self.runs.len() - 1)
    }
}
