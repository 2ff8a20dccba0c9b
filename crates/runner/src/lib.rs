//! # pixreg-runner
//!
//! The `pixreg` command-line tool and the experiment machinery behind it: it turns the other
//! crates (`rsa-core`, `pixreg-models`, `pixreg-datasets`, `pixreg-attacks`) into runs a
//! researcher can start, inspect, compare and resume.
//!
//! Commands:
//! * `pixreg rsa` ([`rsa_cmd`]): pixel similarities, thresholded targets and selected pairs of a
//!   set of images, written to safetensors.
//! * `pixreg predict` ([`predict`]): logits (and pair scores) of a checkpoint on stored images.
//! * `pixreg train` ([`commands`], [`train`]): one experiment config ([`config`]) → a run
//!   folder ([`run_dir`]), trained, evaluated ([`eval`]) and resumable.
//! * `pixreg eval` and `pixreg runs`: re-evaluate a run, list runs.
//!
//! Every file the tool writes goes through [`output`], which writes atomically.

pub mod attack;
pub mod commands;
pub mod config;
pub mod curves;
pub mod data;
pub mod eval;
pub mod fault;
pub mod limits;
pub mod output;
pub mod plot;
pub mod predict;
pub mod provenance;
mod regularization;
pub mod results;
pub mod rsa_cmd;
pub mod run_dir;
pub mod tfevents;
pub mod train;
