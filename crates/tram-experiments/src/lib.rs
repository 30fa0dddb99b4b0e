//! The tram runner: experiments from TOML files into the paper's tables (arXiv 2310.03646 v2), as a library the
//! `tram` binary calls (and tests drive with tasks of their own, `docs/adding-a-task.md`).
//!
//! Walking the house from the top:
//! - [`cli`] the command line, [`commands`] what each command does;
//! - [`experiment`] the TOML files and their profiles ([`experiment::TaskSpec`]: the one place that names the
//!   task kinds), [`sweep`] a profile's runs (planned, claimed, trained, collected);
//! - a run's folder: [`run_dir`] (its state, [`lock`], attempts, checkpoints), [`summary`] (what a finished run
//!   reports), [`run_csv`] (its per-step, per-epoch and per-example CSVs), [`meta`];
//! - the report: [`report`] (files and terminal), [`tables`] (Tables 2–5, 9, 13), [`analysis_table`] (Table 6),
//!   [`significance`], [`plot`], [`paper`] (the paper's labels and numbers), [`long_csv`] (the tidy CSV);
//! - the CSV tools: [`compare`] (`tram compare`), [`regress`] (`tram check`, `tram expectations`);
//! - [`plan`] and [`plan_report`] (`tram plan`: memory and time before a run), [`slurm`], [`doctor`], [`gpu_check`],
//!   [`atomic`] (every file written atomically) and [`json`] (records that keep every float, NaN included).

pub mod analysis_table;
pub mod atomic;
pub mod cli;
pub mod commands;
pub mod compare;
pub mod doctor;
pub mod experiment;
pub mod gpu_check;
pub mod json;
pub mod lock;
pub mod long_csv;
pub mod meta;
pub mod paper;
pub mod plan;
pub mod plan_report;
pub mod plot;
pub mod regress;
pub mod report;
pub mod run_csv;
pub mod run_dir;
pub mod significance;
pub mod slurm;
pub mod summary;
pub mod sweep;
pub mod tables;
pub mod trust_region;
