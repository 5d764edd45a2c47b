//! The command line: clap definitions of the subcommands, and turning their flags into the
//! validated options each part of the library takes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};

use crate::credential_flags::CredentialFlags;
use crate::event::{PayloadSizes, Rate, StreamSpec};
use crate::harness::settings::settings_of;
use crate::harness::{self, run_job, Merged, RunOptions};
use crate::measure;
use crate::payload::PayloadKind;
use crate::protocol::{stdout, LoadJob, PartFile, ServeOptions, StartOn};
use crate::recommend::{self, design::DesignSettings, evidence::Evidence};
use crate::report;
use crate::results;
use crate::scenario::Settings;
use crate::serve;
use crate::setting_flags::{SettingFlags, LOAD, SERVE};
use crate::settings::Side;
use crate::transport::tls::TlsMaterial;
use crate::transport::{
    ClientConfig, Faults, Limits, ServerConfig, Spec, Target, Transport, DEFAULT_HEARTBEAT,
};
use crate::workload::Workload;

/// Measures how events should reach their consumers: WebSocket, SSE (over HTTP/1.1 and
/// HTTP/2), long polling, short polling, webhooks, gRPC streaming, MQTT and raw TCP, delivering
/// one identical stream over real sockets.
#[derive(Debug, Parser)]
#[command(name = "pushbench", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one transport's server as a process of its own, publish the stream, exit when done.
    Serve(ServeArgs),
    /// Subscribe to a running `pushbench serve` and check every subscriber's stream.
    Load(LoadArgs),
    /// Measure transports side by side: a scenario (flags or scenarios/*.toml) in, a table and
    /// results.json out.
    Run(RunArgs),
    /// Combine the parts of one measurement taken across hosts (`serve --stats-out`, `load
    /// --out`) exactly into results.json and the report, as `run` writes them.
    Merge(MergeArgs),
    /// Write report.md and report.html (with SVG plots) beside a results file.
    Report(ReportArgs),
    /// Compare two runs figure by figure, flagging changes beyond the noise (writes compare.md).
    Compare(CompareArgs),
    /// Rank the transports for a design (flags or designs/*.toml) by measured results.
    Recommend(RecommendArgs),
    /// Relay connections to a server through the link emulator's toxics (`--link`, as `run`
    /// takes it), until SIGINT or SIGTERM: standard clients and scripts meet the same faults.
    Link(LinkArgs),
    /// List the transports: what each is, its traits, colour and settings with defaults.
    Transports(TransportsArgs),
    /// List the servers pushbench did not write that it can measure (`--server NAME`): each
    /// profile's server, the transports it serves, the settings it takes, and whether it is
    /// installed here.
    Servers(ServersArgs),
    /// List a results file's rows, one JSON line per run: its key, the name of the row every
    /// output shows it in (its rounds fold into one), its offered rate and repeat (for scripts
    /// that check reports).
    Rows(RowsArgs),
    /// The committed reference set as one: `index` prints its table of runs (results/README.md's),
    /// `headline` the README's headline from the newest run of each headline preset, refused
    /// unless they are one sitting (one revision, one machine).
    Reference(ReferenceArgs),
    /// Hold every packet iptables queues to NFQUEUE number `--queue` for `--by`, then let it
    /// through: delay on a lossy link's packet path (`scripts/netns-link up NAME --delay`
    /// runs one on each side of the link), until SIGINT or SIGTERM. Needs root.
    Delay(DelayArgs),
    /// Echo 64-byte messages on one connection (the calibration peer of `run`).
    #[command(hide = true)]
    Echo(EchoArgs),
    /// A child of `pushbench run`: takes its job on stdin, reports in the typed protocol.
    #[command(hide = true)]
    Worker,
}

impl Command {
    /// Runs the subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Serve(args) => {
                let output = if args.json {
                    serve::Output::Json
                } else {
                    serve::Output::Human
                };
                serve::run(args.into_options()?, output, None).await
            }
            Command::Load(args) => args.run().await,
            Command::Link(args) => {
                let output = if args.json {
                    serve::Output::Json
                } else {
                    serve::Output::Human
                };
                let dialer = match args.server_dials {
                    true => crate::link::Dialer::Server,
                    false => crate::link::Dialer::Subscriber,
                };
                serve::link_process::run((args.listen, args.to), args.link, dialer, output).await
            }
            Command::Worker => harness::worker::run().await,
            Command::Run(RunArgs {
                design: Some(design),
                out,
                ..
            }) => RecommendArgs::measuring(design, out).run().await,
            Command::Run(args) => {
                let outcome = harness::run(args.into_options()?).await?;
                stdout::text(&report::table::render(&outcome.results));
                stdout::line(&format!("results: {}", outcome.path.display()));
                let picks = recommend::which_to_pick(&outcome.results);
                let written = report::write(&outcome.path, &outcome.results, picks)?;
                stdout::line(&format!("report:  {}", written.html.display()));
                if !outcome.results.complete {
                    bail!(
                        "interrupted; partial results kept in {}",
                        outcome.path.display()
                    );
                }
                let failed = outcome.results.runs.iter().filter(|r| r.failed).count();
                if failed > 0 {
                    bail!(
                        "{failed} run(s) did not deliver the identical stream (see FAILED above)"
                    );
                }
                Ok(())
            }
            Command::Merge(args) => args.run(),
            Command::Report(args) => {
                let (path, results) = results::load(&args.results)?;
                if args.headline {
                    stdout::text(&report::headline::tables(&results));
                    return Ok(());
                }
                let picks = recommend::which_to_pick(&results);
                let written = report::write(&path, &results, picks)?;
                stdout::line(&format!(
                    "{}\n{}",
                    written.markdown.display(),
                    written.html.display()
                ));
                Ok(())
            }
            Command::Compare(args) => args.run(),
            Command::Recommend(args) => args.run().await,
            Command::Transports(args) => args.run(),
            Command::Servers(args) => args.run(),
            Command::Rows(args) => args.run(),
            Command::Reference(args) => args.run(),
            Command::Delay(args) => {
                let (queue, by) = (args.queue, args.by);
                let bound = move || {
                    stdout::line(&format!(
                        "delay: holding packets on NFQUEUE {queue} for {}",
                        <Duration as crate::settings::Value>::show(by)
                    ));
                };
                tokio::task::spawn_blocking(move || {
                    crate::link::packet_delay::run(queue, by, bound)
                })
                .await?
                .with_context(|| format!("delaying NFQUEUE {queue} (needs root)"))
            }
            Command::Echo(args) => {
                if let Some(cpus) = &args.cpus {
                    crate::metrics::process::pin_this_process(cpus)?;
                }
                let listener = tokio::net::TcpListener::bind(args.listen).await?;
                stdout::line(&format!("echo listening on {}", listener.local_addr()?));
                Ok(harness::calibrate::echo(listener).await?)
            }
        }
    }
}

/// Flags of `pushbench run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A scenario file (TOML whose keys are these flags' names); flags override it.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// A design file (`designs/*.toml`) instead of a scenario: its own runs, scaled to this
    /// machine, and the recommendation from them (`pushbench recommend --design FILE
    /// --measure`).
    #[arg(long, conflicts_with = "scenario")]
    pub design: Option<PathBuf>,
    /// Directory for results (`DIR/<run-id>/results.json`).
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// The scenario's settings.
    #[command(flatten)]
    pub settings: Settings,
}

impl RunArgs {
    fn into_options(self) -> anyhow::Result<RunOptions> {
        let base = match &self.scenario {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        let scenario = base.overridden_by(self.settings).resolve()?;
        Ok(RunOptions {
            scenario,
            out: self.out,
            exe: std::env::current_exe().context("locating the pushbench executable")?,
            pin: true,
        })
    }
}

/// Flags of `pushbench report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A results.json, or the run directory holding it.
    pub results: PathBuf,
    /// Print only the headline table (Markdown), as the README shows it.
    #[arg(long)]
    pub headline: bool,
}

/// Flags of `pushbench merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Part files, or directories holding them (every `*.json` inside is read as a part).
    #[arg(required = true)]
    pub parts: Vec<PathBuf>,
    /// Directory for results (`DIR/<run-id>/results.json`, the report beside it).
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
}

impl MergeArgs {
    /// Merges, prints the table, writes the report; fails when a subscriber did not get the
    /// identical stream, as `run` does.
    fn run(self) -> anyhow::Result<()> {
        let outcome = harness::merge(&self.parts, &self.out)?;
        stdout::text(&report::table::render(&outcome.results));
        stdout::line(&format!("results: {}", outcome.path.display()));
        let picks = recommend::which_to_pick(&outcome.results);
        let written = report::write(&outcome.path, &outcome.results, picks)?;
        stdout::line(&format!("report:  {}", written.html.display()));
        if outcome.results.runs.iter().any(|r| r.failed) {
            bail!("some subscribers did not receive the identical stream");
        }
        Ok(())
    }
}

/// Flags of `pushbench compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline run (results.json or its directory).
    pub a: PathBuf,
    /// The run compared with it.
    pub b: PathBuf,
    /// Smallest change, in percent, that is flagged even when the ranges do not overlap.
    #[arg(long, default_value_t = 5.0)]
    pub threshold: f64,
    /// Where to write the Markdown (default: compare.md beside B's results).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exit with status 1 when a figure got worse beyond the noise (for CI).
    #[arg(long)]
    pub fail_on_regression: bool,
}

impl CompareArgs {
    fn run(self) -> anyhow::Result<()> {
        if !(self.threshold.is_finite() && self.threshold >= 0.0) {
            bail!(
                "--threshold must be a percentage of zero or more, got {}",
                self.threshold
            );
        }
        let (_, a) = results::load(&self.a)?;
        let (b_path, b) = results::load(&self.b)?;
        let comparison = report::compare::compare(&a, &b, self.threshold);
        let markdown = comparison.document.markdown();
        let out = self
            .out
            .unwrap_or_else(|| b_path.with_file_name("compare.md"));
        std::fs::write(&out, &markdown).with_context(|| format!("writing {}", out.display()))?;
        stdout::text(&markdown);
        stdout::line(&format!("\ncompare: {}", out.display()));
        let regressions = comparison.regressions().count();
        if self.fail_on_regression && regressions > 0 {
            bail!("{regressions} figure(s) got worse beyond the noise");
        }
        Ok(())
    }
}

/// Flags of `pushbench recommend`.
#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// A design file (TOML whose keys are these flags' names); flags override it.
    #[arg(long)]
    pub design: Option<PathBuf>,
    /// Every standard design (the files under designs/), one after another.
    #[arg(long, conflicts_with = "design")]
    pub all_designs: bool,
    /// Results files, run directories, or directories of runs to draw figures from (default:
    /// the newest run of each scenario under results/).
    #[arg(long, num_args = 1.., conflicts_with = "measure")]
    pub results: Vec<PathBuf>,
    /// Measure first: run the design's own scenario here (the transports the hard rules
    /// leave, scaled to this machine within --budget, every scaling stated and recorded),
    /// then judge from those runs alone.
    #[arg(long)]
    pub measure: bool,
    /// With --measure: seconds of runs per transport, set-up included.
    #[arg(long, default_value_t = 120.0)]
    pub budget: f64,
    /// With --measure: most subscribers one run connects.
    #[arg(long, default_value_t = 2_000)]
    pub max_subscribers: usize,
    /// With --measure: most deliveries a second one run asks of the load (the load must
    /// never be the limit).
    #[arg(long, default_value_t = 50_000.0)]
    pub max_deliveries: f64,
    /// With --measure: only these of the transports the hard rules leave.
    #[arg(long)]
    pub transports: Option<crate::scenario::TransportSet>,
    /// With --measure: directory for the runs' results.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// The design's constraints.
    #[command(flatten)]
    pub settings: DesignSettings,
}

/// How `recommend` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Readable in a terminal.
    Text,
    /// For tooling.
    Json,
}

impl RecommendArgs {
    /// `pushbench run --design FILE`: the design measured with every default.
    fn measuring(design: PathBuf, out: PathBuf) -> Self {
        Self {
            design: Some(design),
            all_designs: false,
            results: Vec::new(),
            measure: true,
            budget: 120.0,
            max_subscribers: 2_000,
            max_deliveries: 50_000.0,
            transports: None,
            out,
            format: Format::Text,
            settings: DesignSettings::default(),
        }
    }

    async fn run(self) -> anyhow::Result<()> {
        let designs = self.designs()?;
        if !self.measure {
            let evidence = Evidence::load(&self.results, std::path::Path::new("results"))?;
            for design in &designs {
                self.answer(&recommend::recommend(design, &evidence))?;
            }
            return Ok(());
        }
        let options = self.measure_options()?;
        // JSON keeps stdout for the answers: the plan and the runs' tables go to stderr.
        let say = |text: &str| match self.format {
            Format::Text => {
                stdout::text(text);
            }
            Format::Json => eprint!("{text}"),
        };
        let mut summary = Vec::new();
        for design in &designs {
            let prepared = match measure::prepare(design, &options) {
                Ok(prepared) => prepared,
                // One of many that cannot be measured says why, and the others go on.
                Err(why) if self.all_designs => {
                    say(&format!("{why:#}\n\n"));
                    summary.push(measure::render::Line::unscaled(design, &why));
                    continue;
                }
                Err(why) => return Err(why),
            };
            say(&measure::render::plan(&prepared));
            let measured = match measure::run(&prepared, &options).await {
                Ok(measured) => measured,
                // A run that could not finish is said with its reason; the others go on.
                Err(why) if self.all_designs => {
                    say(&format!("design {} not measured: {why:#}\n\n", design.name));
                    summary.push(measure::render::Line::unscaled(design, &why));
                    continue;
                }
                Err(why) => return Err(why),
            };
            for run in &measured.runs {
                say(&report::table::render(&run.results));
                let picks = recommend::which_to_pick(&run.results);
                let written = report::write(&run.path, &run.results, picks)?;
                say(&format!(
                    "results: {}\nreport:  {}\n",
                    run.path.display(),
                    written.html.display()
                ));
            }
            self.answer(&measured.recommendation)?;
            say(&format!(
                "measured in {:.0} s\n\n",
                measured.took.as_secs_f64()
            ));
            summary.push(measure::render::Line::of(&prepared, &measured));
        }
        if self.all_designs {
            say(&measure::render::summary(&summary));
        }
        Ok(())
    }

    /// The designs asked for: every standard one, or the one from the file and flags.
    fn designs(&self) -> anyhow::Result<Vec<recommend::design::Design>> {
        if self.all_designs {
            return recommend::STANDARD_DESIGNS
                .iter()
                .map(|(name, text)| {
                    let mut settings =
                        DesignSettings::from_toml(text).map_err(anyhow::Error::msg)?;
                    settings.name.get_or_insert_with(|| (*name).to_owned());
                    Ok(settings.resolve()?)
                })
                .collect();
        }
        let base = match &self.design {
            Some(path) => DesignSettings::from_file(path)?,
            None => DesignSettings::default(),
        };
        Ok(vec![base.overridden_by(self.settings.clone()).resolve()?])
    }

    /// What `--measure` may spend, checked.
    fn measure_options(&self) -> anyhow::Result<measure::MeasureOptions> {
        if !(self.budget.is_finite() && self.budget > 0.0) {
            bail!(
                "--budget must be a positive number of seconds, got {}",
                self.budget
            );
        }
        if self.max_subscribers == 0 {
            bail!("--max-subscribers must be at least 1");
        }
        if !(self.max_deliveries.is_finite() && self.max_deliveries > 0.0) {
            bail!(
                "--max-deliveries must be a positive number of deliveries a second, got {}",
                self.max_deliveries
            );
        }
        let exe = std::env::current_exe().context("locating the pushbench executable")?;
        Ok(measure::MeasureOptions {
            limits: measure::scale::Limits::of_this_machine(
                std::time::Duration::from_secs_f64(self.budget),
                self.max_subscribers,
                self.max_deliveries,
            ),
            only: self.transports.clone().map(|t| t.0).unwrap_or_default(),
            out: self.out.clone(),
            exe,
            pin: true,
        })
    }

    /// Prints one recommendation in the format asked for.
    fn answer(&self, answer: &recommend::Recommendation) -> anyhow::Result<()> {
        match self.format {
            Format::Text => stdout::text(&recommend::render::text(answer)),
            Format::Json => stdout::line(&serde_json::to_string_pretty(answer)?),
        };
        Ok(())
    }
}

/// Flags of `pushbench rows`.
#[derive(Debug, Args)]
pub struct RowsArgs {
    /// A results.json, or the run directory holding it.
    pub results: PathBuf,
}

impl RowsArgs {
    fn run(self) -> anyhow::Result<()> {
        use std::io::Write as _;
        let (_, results) = crate::results::load(&self.results)?;
        let mut out = std::io::stdout().lock();
        for run in &results.runs {
            let line = serde_json::json!({
                // Rounds of one row are one series wherever results are shown.
                "label": run.key.of_every_round().label(),
                "key": run.key,
                "offered_rate": run.offered_rate,
                "repeat": run.repeat,
            });
            match writeln!(out, "{line}") {
                // A reader that has what it wants (`| head`) is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                other => other?,
            }
        }
        Ok(())
    }
}

/// Flags of `pushbench servers`.
#[derive(Debug, Args)]
pub struct ServersArgs {
    /// Print JSON lines, one per profile, for scripts and tests.
    #[arg(long)]
    pub json: bool,
}

impl ServersArgs {
    fn run(self) -> anyhow::Result<()> {
        for profile in crate::profile::shipped_profiles().map_err(anyhow::Error::msg)? {
            let serves: Vec<&str> = profile.subscribe.keys().map(String::as_str).collect();
            let installed = crate::outside::process::installed(profile);
            if self.json {
                stdout::line(&serde_json::to_string(&serde_json::json!({
                    "name": profile.name,
                    "summary": profile.summary,
                    "serves": serves,
                    "takes": profile.takes,
                    "installed": installed,
                    "install": profile.install,
                }))?);
                continue;
            }
            stdout::line(&format!("{:<10} {}", profile.name, profile.summary));
            stdout::line(&format!("{:10}   serves: {}", "", serves.join(", ")));
            if !profile.takes.is_empty() {
                stdout::line(&format!(
                    "{:10}   takes: --{}",
                    "",
                    profile.takes.join(", --")
                ));
            }
            let install = profile.install.as_deref().unwrap_or("its package");
            stdout::line(&format!(
                "{:10}   {}",
                "",
                match installed {
                    true => "installed".to_owned(),
                    false => format!("not installed ({install} installs it)"),
                }
            ));
        }
        Ok(())
    }
}

/// What `pushbench reference` prints.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ReferenceOutput {
    /// The index of every run (Markdown table).
    Index,
    /// The README's headline tables.
    Headline,
}

/// Flags of `pushbench reference`.
#[derive(Debug, Args)]
pub struct ReferenceArgs {
    /// What to print.
    pub output: ReferenceOutput,
    /// The runs' directories (the committed ones: `scripts/update-readme` names them); every
    /// run under `--results` when none is named.
    pub runs: Vec<PathBuf>,
    /// Where the runs are, when none is named.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// The presets' directory, whose files say what each run measures.
    #[arg(long, default_value = "scenarios")]
    pub scenarios: PathBuf,
}

impl ReferenceArgs {
    fn run(self) -> anyhow::Result<()> {
        let runs = match self.runs.is_empty() {
            true => report::reference::load(&self.results)?,
            false => report::reference::load_dirs(&self.runs)?,
        };
        match self.output {
            ReferenceOutput::Index => {
                stdout::text(&report::reference::index(&runs, &self.scenarios));
            }
            ReferenceOutput::Headline => {
                let headline = report::reference::headline(&runs)
                    .map_err(|why| anyhow::anyhow!("the headline's runs: {why}"))?;
                stdout::text(&headline);
            }
        }
        Ok(())
    }
}

/// Flags of `pushbench transports`.
#[derive(Debug, Args)]
pub struct TransportsArgs {
    /// Print JSON (every declaration in full), for scripts and tests.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print a Markdown table (the README's).
    #[arg(long)]
    pub markdown: bool,
}

impl TransportsArgs {
    fn run(self) -> anyhow::Result<()> {
        let specs: Vec<&Spec> = Transport::ALL.iter().map(|t| t.spec()).collect();
        if self.json {
            stdout::line(&serde_json::to_string_pretty(&specs)?);
            return Ok(());
        }
        if self.markdown {
            stdout::text(&transports_table());
            return Ok(());
        }
        for &transport in Transport::ALL {
            let spec = transport.spec();
            stdout::line(&format!("{:<10} {}", transport.name(), spec.summary));
            // Every implementation of each side, the default first.
            let servers = spec.servers.iter().map(|s| (s.name, s.summary));
            let clients = spec.clients.iter().map(|c| (c.name, c.summary));
            for (side, name, summary) in servers
                .map(|(n, s)| ("server", n, s))
                .chain(clients.map(|(n, s)| ("client", n, s)))
            {
                stdout::line(&format!("{:10}   {side} {name}: {summary}", ""));
            }
            for setting in settings_of(transport) {
                stdout::line(&format!(
                    "{:10}   --{} {} (default {}, {}): {}",
                    "",
                    setting.name(),
                    setting.kind(),
                    setting.default_text(),
                    format!("{:?}", setting.side()).to_lowercase(),
                    setting.help()
                ));
            }
        }
        Ok(())
    }
}

/// The transports as a Markdown table: what each is, what receives it, how missed events
/// come back, and its settings with their defaults.
fn transports_table() -> String {
    use crate::document::{Block, Document};
    use crate::transport::Redelivery;
    let rows = Transport::ALL
        .iter()
        .map(|&transport| {
            let spec = transport.spec();
            let traits = &spec.traits;
            let receiver = match (traits.browser_api, traits.needs_inbound_http) {
                (Some(api), _) => format!("browser `{api}`"),
                (None, true) => "an HTTP endpoint of the consumer's own".into(),
                (None, false) => "no browser API".into(),
            };
            let missed = match traits.redelivery {
                Redelivery::BuiltIn(how)
                | Redelivery::Retries(how, _)
                | Redelivery::Application(how) => how,
            };
            // The server is in the implementations column.
            let settings: Vec<String> = settings_of(transport)
                .iter()
                .filter(|s| s.name() != crate::profile::SERVER.name)
                .map(|s| format!("`--{}` {}", s.name(), s.default_text()))
                .collect();
            // Every implementation of each side, pushbench's own first.
            let named = |names: Vec<&str>| {
                let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
                names.join(", ")
            };
            let profiles = crate::profile::shipped_profiles().unwrap_or_default();
            let servers: Vec<&str> = profiles
                .iter()
                .filter(|p| p.subscription(spec.name).is_ok())
                .map(|p| p.name.as_str())
                .collect();
            let implementations = format!(
                "server: {}; client: {}{}",
                named(spec.servers.iter().map(|s| s.name).collect()),
                named(spec.clients.iter().map(|c| c.name).collect()),
                match servers.is_empty() {
                    true => String::new(),
                    false => format!("; servers pushbench did not write: {}", named(servers)),
                }
            );
            vec![
                format!("`{}`", spec.name),
                spec.summary.to_owned(),
                receiver,
                missed.to_owned(),
                implementations,
                if settings.is_empty() {
                    "—".into()
                } else {
                    settings.join(", ")
                },
            ]
        })
        .collect();
    let doc = Document {
        title: String::new(),
        blocks: vec![Block::Table {
            head: [
                "transport",
                "what it is",
                "received by",
                "missed events",
                "implementations (`--server-impl`, `--client-impl`, `--server`)",
                "settings (default)",
            ]
            .map(String::from)
            .to_vec(),
            emphasis: Transport::ALL.iter().map(|t| t.traits().floor).collect(),
            rows,
        }],
    };
    doc.markdown_body()
}

/// Flags of `pushbench delay`.
#[derive(Debug, Args)]
pub struct DelayArgs {
    /// The NFQUEUE queue number to hold packets from (iptables' `--queue-num`).
    #[arg(long, default_value_t = 0)]
    pub queue: u16,
    /// How long each packet is held, one way: `25ms`, `1s`.
    #[arg(long, value_parser = parse_delay)]
    pub by: Duration,
}

/// A delay as settings write one (`25ms`, `1s`, `250us`).
fn parse_delay(text: &str) -> Result<Duration, String> {
    <Duration as crate::settings::Value>::parse(text)
}

/// Flags of the hidden `pushbench echo`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Pin to these CPUs.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
}

/// The stream, named the same way by every subcommand that needs it.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Events in the stream.
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Offered rate in events per second, or `max` for no schedule.
    #[arg(long, default_value = "max")]
    pub rate: Rate,
    /// Payload bytes per event, or a comma-separated list cycled by sequence number.
    #[arg(long, default_value = "64")]
    pub payload: PayloadSizes,
    /// Seed for the payload bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// What payloads look like: `random` printable text or `json` shaped like a real event.
    #[arg(long, default_value = "random")]
    pub payload_kind: PayloadKind,
    /// Who gets which events: `broadcast` (one stream to all), `topics` (rooms: --topics K,
    /// each subscriber in --topics-per-subscriber of them) or `unicast` (one stream per
    /// subscriber). --events and --rate are each stream's.
    #[arg(long, default_value = "broadcast")]
    pub workload: String,
    /// Rooms of `--workload topics`.
    #[arg(long)]
    pub topics: Option<u32>,
    /// Rooms each subscriber joins (default 1).
    #[arg(long)]
    pub topics_per_subscriber: Option<u32>,
    /// How rooms are drawn from the seed: `uniform`, `zipf:S`, or dealt in turn: `even`.
    #[arg(long)]
    pub membership: Option<String>,
    /// Subscribers of the whole measurement, every load process's (`--workload unicast` has
    /// a stream for each); default: this command's own (`serve`: --start-after, `load`:
    /// --subscribers).
    #[arg(long)]
    pub all_subscribers: Option<usize>,
}

impl StreamArgs {
    /// The global stream, for `subscribers` subscribers unless --all-subscribers says more.
    fn spec(&self, subscribers: usize) -> anyhow::Result<StreamSpec> {
        let workload = Workload::parse(
            &self.workload,
            self.topics,
            self.topics_per_subscriber,
            self.membership.as_deref(),
        )
        .map_err(anyhow::Error::msg)?;
        Ok(
            StreamSpec::new(self.seed, self.events, self.payload.clone(), self.rate)?
                .with_kind(self.payload_kind)
                .with_workload(workload, self.all_subscribers.unwrap_or(subscribers)),
        )
    }
}

/// Flags of `pushbench serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The transport to serve.
    #[arg(long, value_enum)]
    pub transport: Transport,
    /// Address to listen on; port 0 picks a free port (printed on the first line).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The stream.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Start the stream once this many subscribers are connected (or endpoints registered).
    #[arg(long, default_value_t = 1)]
    pub start_after: usize,
    /// Seconds between keep-alives (WebSocket pings, SSE comments) [default: 15].
    #[arg(long, value_parser = parse_secs)]
    pub heartbeat: Option<Duration>,
    /// The transport's credentials: secrets read from files or the environment (never from
    /// argv, where `ps` would show them; made and printed where absent), and consents.
    #[command(flatten)]
    pub credentials: CredentialFlags<SERVE>,
    /// TLS (with `--tls on`): the certificate to serve with, and the certificates of the
    /// webhook consumers to trust.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Subscribers (connections or webhook endpoints) at once; more are refused (503, or close
    /// 1013). Default: what the open-file limit allows.
    #[arg(long)]
    pub max_subscribers: Option<usize>,
    /// Seconds one write may wait on a subscriber that does not read before it is dropped.
    #[arg(long, default_value = "30", value_parser = parse_secs)]
    pub write_timeout: Duration,
    /// Seconds without delivery progress, once published, before exiting with subscribers left.
    #[arg(long, default_value = "60", value_parser = parse_secs)]
    pub drain_timeout: Duration,
    /// Seconds to hold subscribers idle once --start-after are connected, before publishing.
    #[arg(long, default_value = "0", value_parser = parse_secs)]
    pub start_delay: Duration,
    /// Pin the server to these CPUs (comma-separated), apart from the load.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
    /// Fault: hand every event out no sooner than this many milliseconds after publication.
    #[arg(long)]
    pub inject_delay_ms: Option<f64>,
    /// Fault: stall the publisher before event SEQ for MS milliseconds (`SEQ:MS`).
    #[arg(long, value_parser = parse_stall)]
    pub stall: Option<(u64, Duration)>,
    /// Speak the typed protocol's reports (JSON lines) on stdout instead of sentences, for
    /// scripts: `listening` with the address, `credentials` it made, and `stats` last.
    #[arg(long)]
    pub json: bool,
    /// Server processes sharing the port (SO_REUSEPORT), each publishing the same stream on the
    /// same schedule, their stats summed: past one process's open-file limit.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub processes: u16,
    /// Write the server's part (its CPU, memory, socket bytes and publisher lateness, with the
    /// stream and settings) to this file, for `pushbench merge`.
    #[arg(long)]
    pub stats_out: Option<PathBuf>,
    /// The transports' own settings (the served transport reads its own).
    #[command(flatten)]
    pub settings: SettingFlags<SERVE>,
}

impl ServeArgs {
    fn into_options(self) -> anyhow::Result<ServeOptions> {
        if self.start_after == 0 {
            bail!("--start-after must be at least 1: a stream with no subscriber measures nothing");
        }
        let mut config = ServerConfig {
            heartbeat: self.heartbeat.unwrap_or(DEFAULT_HEARTBEAT),
            settings: self.settings.values(),
            faults: Faults {
                delivery_delay: self
                    .inject_delay_ms
                    .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1e3)),
                stall: self.stall,
            },
            ..ServerConfig::default()
        };
        // What the transport needs and was not given is made here and told once: nobody else
        // knows it.
        let spec = self.transport.spec();
        config.credentials = self.credentials.read()?;
        let announce = config
            .credentials
            .complete(spec.credentials.iter().copied())
            .into_iter()
            .map(str::to_owned)
            .collect();
        config
            .credentials
            .check(spec, Side::Server)
            .map_err(anyhow::Error::msg)?;
        config.tls = self.tls.material(&[self.listen.ip()])?;
        config.limits = Limits {
            max_subscribers: self.max_subscribers,
            write_timeout: self.write_timeout,
        };
        Ok(ServeOptions {
            transport: self.transport,
            listen: self.listen,
            spec: self.stream.spec(self.start_after)?,
            start_after: self.start_after,
            config,
            drain_timeout: self.drain_timeout,
            start_delay: self.start_delay,
            cpus: self.cpus,
            announce,
            schedule_origin_ns: None,
            returning: 0,
            processes: usize::from(self.processes),
            reuse_port: false,
            start_on: StartOn::Count,
            stats_out: self.stats_out,
        })
    }
}

/// Flags of `pushbench link`.
#[derive(Debug, Args)]
pub struct LinkArgs {
    /// Where clients connect (port 0: any free port, said on stdout).
    #[arg(long)]
    listen: SocketAddr,
    /// The server each connection is relayed to.
    #[arg(long)]
    to: SocketAddr,
    /// The toxics, as `run --link` takes them: comma-separated key=value pairs
    /// (latency, jitter, bandwidth, slow_close, timeout, reset_peer, limit_data, slicer) or a
    /// preset's name.
    #[arg(long)]
    link: crate::link::Link,
    /// The server dials through the link to a subscriber's endpoint (a webhook provider to its
    /// consumer at `--to`): the toxics that act toward the subscriber act on what the server
    /// sends.
    #[arg(long)]
    server_dials: bool,
    /// Say where it listens as a JSON report on stdout (the typed protocol), for scripts.
    #[arg(long)]
    json: bool,
}

/// Flags of `pushbench load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The transport to subscribe with.
    #[arg(long, value_enum)]
    pub transport: Transport,
    /// The server: HOST:PORT (a name such as a Kubernetes Service, or an address, as
    /// `pushbench serve` printed it). On another host, this worker measures its clock's offset
    /// to the server's first (UDP round trips to the same port number).
    #[arg(long, value_name = "HOST:PORT")]
    pub target: String,
    /// This worker's index among several (from 0): it names the part, and a run's slow
    /// consumer is worker 0's first subscriber.
    #[arg(long, default_value_t = 0)]
    pub worker: usize,
    /// The local address subscribers connect from and webhook consumers listen on. Default: on
    /// loopback, spread over 127.0.0.1-16; otherwise the address the route to the target uses.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Concurrent subscribers.
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// The stream the server publishes (must match its flags).
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The transport's credentials, as `pushbench serve` printed them: from files or from the
    /// environment, never argv.
    #[command(flatten)]
    pub credentials: CredentialFlags<LOAD>,
    /// TLS (with `--tls on`): the server's certificate to trust (`--ca`), and for webhook
    /// consumers the certificate to serve with.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Seconds a subscriber may take before it is counted as failed.
    #[arg(long, default_value = "120", value_parser = parse_secs)]
    pub timeout: Duration,
    /// Write what was measured (histograms, counts, digests checked, CPU and memory) as a part
    /// file that can be merged with others.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The transports' own settings (the subscribing transport reads its own).
    #[command(flatten)]
    pub settings: SettingFlags<LOAD>,
}

impl LoadArgs {
    async fn into_job(self) -> anyhow::Result<LoadJob> {
        if self.subscribers == 0 {
            bail!("--subscribers must be at least 1");
        }
        let server = resolve_target(&self.target).await?;
        // Off loopback, a webhook consumer must listen where the provider can reach it: the
        // address this host uses toward the server.
        let bind = match self.bind {
            Some(ip) => Some(ip),
            None if server.ip().is_loopback() => None,
            None => Some(route_source(server)?),
        };
        let credentials = self.credentials.read()?;
        credentials
            .check(self.transport.spec(), Side::Client)
            .map_err(anyhow::Error::msg)?;
        let config = ClientConfig {
            settings: self.settings.values(),
            credentials,
            tls: self.tls.material(&[])?,
            bind,
            // Started by hand, a load process knows only its own subscribers.
            population: self.subscribers,
            ..ClientConfig::default()
        };
        Ok(LoadJob {
            worker: self.worker,
            transport: self.transport,
            target: Target::at(server),
            subscribers: self.subscribers,
            first_subscriber: self.worker.saturating_mul(self.subscribers),
            spec: self.stream.spec(self.subscribers)?,
            warmup: Duration::ZERO,
            interval_origin_ns: crate::clock::now_ns(),
            config,
            timeout: self.timeout,
            cpus: None,
            measure_clock: true,
            relay_link: None,
        })
    }

    /// Runs the subscribers here, prints what they received, and fails unless every one got
    /// the identical stream.
    async fn run(self) -> anyhow::Result<()> {
        let out = self.out.clone();
        let job = self.into_job().await?;
        // One process: its subscribers are all there are, so they go once they all hold.
        let part = run_job(&job, |_, _, _| {}, || async {}).await?;
        if let Some(out) = &out {
            PartFile::Load(Box::new(part.clone())).write(out)?;
        }
        let merged = Merged::of(std::slice::from_ref(&part))?;
        stdout::line(&format!(
            "{} load against {}",
            job.transport, job.target.addr
        ));
        if let Some(clock) = &part.clock {
            stdout::line(&format!(
                "clock offset      {:+.1} us to the server's, +/- {:.1} us (applied to every \
                 receive time)",
                clock.applied_ns() as f64 / 1e3,
                clock.uncertainty_ns() as f64 / 1e3
            ));
        }
        stdout::line(&merged.to_string());
        if merged.counts.failed() {
            bail!(
                "{} of {} subscribers did not receive the identical stream",
                merged.counts.subscribers - merged.counts.intact,
                merged.counts.subscribers
            );
        }
        Ok(())
    }
}

/// The server's address from `HOST:PORT`: an address as is, a name through the resolver (the
/// first address it gives).
async fn resolve_target(target: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = target.parse() {
        return Ok(addr);
    }
    if !target
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
    {
        bail!("--target {target:?}: expected HOST:PORT, such as 127.0.0.1:8080 or server:8080");
    }
    tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("--target {target}: cannot resolve the host"))?
        .next()
        .with_context(|| format!("--target {target}: the host has no address"))
}

/// The local address this host's route toward `server` uses (no packet is sent: connecting a
/// UDP socket only picks the route).
fn route_source(server: SocketAddr) -> anyhow::Result<IpAddr> {
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = std::net::UdpSocket::bind(any)?;
    socket
        .connect(server)
        .with_context(|| format!("no route to {server}"))?;
    Ok(socket.local_addr()?.ip())
}

/// Seconds as a decimal number (`0.5`, `30`).
fn parse_secs(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("expected seconds (a non-negative number), got {text:?}"))
}

/// `SEQ:MS`: stall before event SEQ for MS milliseconds.
fn parse_stall(text: &str) -> Result<(u64, Duration), String> {
    let parsed = text
        .split_once(':')
        .and_then(|(seq, ms)| Some((seq.parse().ok()?, ms.parse::<f64>().ok()?)));
    match parsed {
        Some((seq, ms)) if ms.is_finite() && ms >= 0.0 => {
            Ok((seq, Duration::from_secs_f64(ms / 1e3)))
        }
        _ => Err(format!("expected SEQ:MS (e.g. 500:200), got {text:?}")),
    }
}

/// TLS files, for `serve`, `load` and `run`; TLS itself is turned on by `--tls on`.
#[derive(Debug, Default, Args)]
pub struct TlsArgs {
    /// The certificate chain (PEM) to serve with; with --tls-key. Default: a self-signed
    /// certificate made at start for localhost, the loopback addresses and the listen address.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Certificates (PEM) to trust when connecting: the server's, as `serve --write-cert`
    /// wrote it (for `load`), or webhook consumers' (for `serve`).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Write the certificate this side serves with (PEM) to this file, for the other side's
    /// --ca.
    #[arg(long)]
    pub write_cert: Option<PathBuf>,
    /// Trust the server's certificate by its SHA-256 (64 hex digits, as `serve` prints it),
    /// over every transport, as a browser's WebTransport does: the certificate must be ECDSA
    /// P-256 and valid for at most 14 days (`serve`'s own is). Repeat for several.
    #[arg(long, value_parser = parse_cert_hash)]
    pub cert_hash: Vec<String>,
}

/// A certificate hash: 64 hex digits (colons allowed between pairs, as browsers show them).
fn parse_cert_hash(text: &str) -> Result<String, String> {
    let digits: String = text.chars().filter(|c| *c != ':').collect();
    if digits.len() == 64 && digits.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(digits.to_ascii_lowercase())
    } else {
        Err(format!(
            "expected a SHA-256 as 64 hex digits (as `pushbench serve` prints it), got {text:?}"
        ))
    }
}

impl TlsArgs {
    /// The TLS material these flags name: the given certificate or a self-signed one for
    /// `addresses`, trusting --ca (and, with no --ca, the certificate itself, as in one run
    /// where both sides are pushbench).
    pub fn material(&self, addresses: &[std::net::IpAddr]) -> anyhow::Result<TlsMaterial> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        let mut material = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => TlsMaterial::from_pem(read(cert)?, read(key)?),
            _ => TlsMaterial::self_signed(addresses)?,
        };
        // With --cert-hash and no --ca, the hash is what is trusted, not this side's own
        // certificate (which is another than the server's).
        let trusted = match (&self.ca, self.cert_hash.is_empty()) {
            (Some(ca), _) => Some(read(ca)?.into()),
            (None, false) => None,
            (None, true) => material.cert_pem.clone(),
        };
        // Hashes given are trusted; with --ca, only what it names; otherwise this side's own.
        let own_hashes = std::mem::take(&mut material.trusted_hashes);
        material.trusted_hashes = match (&self.ca, self.cert_hash.is_empty()) {
            (_, false) => self.cert_hash.clone(),
            (Some(_), true) => Vec::new(),
            (None, true) => own_hashes,
        };
        let material = material.trusting(trusted);
        material.check()?;
        if let (Some(path), Some(cert)) = (&self.write_cert, &material.cert_pem) {
            std::fs::write(path, cert.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(material)
    }
}
