//! The command line. Only commands that work exist.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "wadispatch",
    version,
    about = "Paced WhatsApp template campaigns from Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGINT or SIGTERM.
    Run {
        /// Configuration file.
        #[arg(
            long,
            short,
            default_value = "config/wadispatch.toml",
            env = "WADISPATCH_CONFIG"
        )]
        config: PathBuf,
    },
    /// Check a configuration file, or a campaign spec (a `.json` file), without
    /// running; prints every problem.
    Validate {
        /// A campaign spec (`.json`) or a configuration file; without it, the
        /// configuration given by --config.
        file: Option<PathBuf>,
        /// Configuration file.
        #[arg(
            long,
            short,
            default_value = "config/wadispatch.toml",
            env = "WADISPATCH_CONFIG"
        )]
        config: PathBuf,
    },
    /// Audience tools.
    Audience {
        #[command(subcommand)]
        command: AudienceCommand,
    },
    /// What the campaigns are doing (from the running daemon, else the
    /// store), and pause, resume or end one (published to the campaigns
    /// topic).
    Campaigns {
        #[command(subcommand)]
        command: CampaignsCommand,
    },
    /// Store tools (ScyllaDB schema, connectivity).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Per-contact report of a campaign (CSV, JSON or an Excel workbook), or
    /// its funnel summary.
    /// Reads the store directly: stop the daemon first when the store is
    /// the embedded one (it is locked while the daemon runs).
    Report {
        /// Campaign id.
        #[arg(long)]
        campaign: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "csv")]
        format: crate::report::Format,
        /// Write to this file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the funnel summary instead of one row per contact.
        #[arg(long)]
        summary: bool,
        /// Add a `variables` column: the parameters frozen for each
        /// contact's message (they can hold personal data: off by default).
        #[arg(long)]
        with_variables: bool,
        /// Configuration file (which store to read).
        #[arg(
            long,
            short,
            default_value = "config/wadispatch.toml",
            env = "WADISPATCH_CONFIG"
        )]
        config: PathBuf,
    },
    /// Put `unknown` (or `failed`) contacts of a campaign back to pending, so
    /// that they are sent again. With the embedded store, stop the daemon first.
    Requeue {
        /// Campaign id.
        #[arg(long)]
        campaign: String,
        /// `unknown` (the request may have reached Meta: a duplicate risk) or
        /// `failed`.
        #[arg(long)]
        state: String,
        /// With `--state failed`: only this error class (e.g. `transient`).
        #[arg(long)]
        class: Option<String>,
        /// Only contacts in that state for at least this long (30s, 15m, 2h, 1d).
        #[arg(long)]
        older_than: Option<String>,
        /// Count what would be requeued; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Configuration file (which store to change).
        #[arg(
            long,
            short,
            default_value = "config/wadispatch.toml",
            env = "WADISPATCH_CONFIG"
        )]
        config: PathBuf,
    },
    /// Run the WhatsApp Cloud API simulator (dry runs and load tests).
    Sandbox {
        /// Address to listen on (default 127.0.0.1:8089).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Where to post signed status and reply webhooks (the daemon's /webhook).
        #[arg(long)]
        webhook_url: Option<String>,
        /// App secret that signs webhooks (X-Hub-Signature-256); default
        /// "sandbox-app-secret".
        #[arg(long, env = "WADISPATCH_APP_SECRET", hide_env_values = true)]
        app_secret: Option<String>,
        /// Messages per second accepted per phone_number_id (error 130429 above).
        #[arg(long)]
        per_number_mps: Option<f64>,
        /// TOML file with every sandbox setting (failure rules, shares, latency);
        /// flags given on the command line override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the whole pipeline on embedded defaults with the example campaigns.
    Demo {
        /// Keep the demo's store in this directory (default: a temporary one).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Where `campaigns` reads and writes: the config file, the daemon's admin
/// listener, the brokers.
#[derive(clap::Args)]
struct CampaignsTarget {
    /// Configuration file (admin listener, brokers, topics, store).
    #[arg(
        long,
        short,
        default_value = "config/wadispatch.toml",
        env = "WADISPATCH_CONFIG"
    )]
    config: PathBuf,
    /// The daemon's admin API (default: http:// and admin.listen of the
    /// config).
    #[arg(long)]
    admin: Option<String>,
    /// Kafka bootstrap servers (default: kafka.brokers of the config).
    #[arg(long)]
    brokers: Option<String>,
}

#[derive(Subcommand)]
enum CampaignsCommand {
    /// Every campaign: kind, desired and observed state, progress, rate,
    /// ETA, what it waits for.
    List {
        #[command(flatten)]
        target: CampaignsTarget,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One campaign in full: funnel, states, exclusions, failures, steps.
    Show {
        /// Campaign id.
        id: String,
        #[command(flatten)]
        target: CampaignsTarget,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Pause a campaign: nothing more is claimed; contacts stay staged.
    Pause {
        /// Campaign id.
        id: String,
        #[command(flatten)]
        target: CampaignsTarget,
    },
    /// Resume a paused campaign.
    Resume {
        /// Campaign id.
        id: String,
        #[command(flatten)]
        target: CampaignsTarget,
    },
    /// End a campaign for good: it never sends again, and its contacts may
    /// be targeted by other campaigns.
    End {
        /// Campaign id.
        id: String,
        #[command(flatten)]
        target: CampaignsTarget,
        /// Confirm: ending cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Create the ScyllaDB keyspace and tables (idempotent) and print each
    /// statement applied. For store.backend = "scylla".
    Init {
        /// Configuration file (store.scylla settings).
        #[arg(
            long,
            short,
            default_value = "config/wadispatch.toml",
            env = "WADISPATCH_CONFIG"
        )]
        config: PathBuf,
    },
    /// Open the configured store, check its schema and answer a ping.
    Check {
        /// Configuration file.
        #[arg(
            long,
            short,
            default_value = "config/wadispatch.toml",
            env = "WADISPATCH_CONFIG"
        )]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AudienceCommand {
    /// Validate an audience (CSV or a workbook) and produce it to the
    /// audience topic.
    Import {
        /// Campaign the contacts belong to.
        #[arg(long)]
        campaign: String,
        /// Kafka bootstrap servers (default: kafka.brokers of the config).
        #[arg(long)]
        brokers: Option<String>,
        /// Configuration file (topics, brokers, default region).
        #[arg(
            long,
            short,
            default_value = "config/wadispatch.toml",
            env = "WADISPATCH_CONFIG"
        )]
        config: PathBuf,
        /// Validate and report only; produce nothing.
        #[arg(long)]
        dry_run: bool,
        /// Field separator: `,` (default), `;` (Excel in much of Europe and
        /// Latin America), `tab` or `|`.
        #[arg(long, default_value = ",", value_parser = parse_delimiter)]
        delimiter: u8,
        /// For a `report` export read back as an audience: take only the
        /// rows in this state (repeat for several: `--state failed --state
        /// excluded`).
        #[arg(long = "state")]
        states: Vec<String>,
        /// Write every problem found (line, problem) to this CSV file; the
        /// terminal shows the first 20 of each kind.
        #[arg(long)]
        problems_out: Option<PathBuf>,
        /// The campaign's spec (JSON): every row is also checked as staging
        /// will check it (template variables, send_after, user ids, segment,
        /// test recipients, timezones). Default: the campaign's spec on the
        /// campaigns topic, when the brokers answer.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// The sheet to read from a workbook (default: its first sheet).
        #[arg(long)]
        sheet: Option<String>,
        /// CSV file or workbook (.xlsx, .xls, .ods) with a header row: phone
        /// or user_id (or a report's contact), then any variables.
        file: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => crate::app::run(&config),
        Command::Validate { file, config } => return validate(file.as_deref(), &config),
        Command::Audience {
            command:
                AudienceCommand::Import {
                    campaign,
                    brokers,
                    config,
                    dry_run,
                    delimiter,
                    states,
                    problems_out,
                    spec,
                    sheet,
                    file,
                },
        } => audience_import(
            &campaign,
            brokers,
            &config,
            dry_run,
            &file,
            crate::import::ImportOptions {
                delimiter,
                states,
                sheet,
            },
            (problems_out.as_deref(), spec.as_deref()),
        ),
        Command::Campaigns { command } => campaigns(command),
        Command::Store {
            command: StoreCommand::Init { config },
        } => store_init(&config),
        Command::Store {
            command: StoreCommand::Check { config },
        } => store_check(&config),
        Command::Report {
            campaign,
            format,
            out,
            summary,
            with_variables,
            config,
        } => report(
            &campaign,
            format,
            out,
            summary,
            crate::report::ExportOptions {
                variables: with_variables,
            },
            &config,
        ),
        Command::Requeue {
            campaign,
            state,
            class,
            older_than,
            dry_run,
            config,
        } => requeue(
            &campaign,
            &state,
            class.as_deref(),
            older_than.as_deref(),
            dry_run,
            &config,
        ),
        Command::Sandbox {
            listen,
            webhook_url,
            app_secret,
            per_number_mps,
            config,
        } => sandbox(listen, webhook_url, app_secret, per_number_mps, config),
        Command::Demo { data_dir } => crate::demo::run(crate::demo::DemoOptions { data_dir }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(file: Option<&Path>, config: &Path) -> ExitCode {
    match file {
        Some(spec)
            if spec
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json")) =>
        {
            validate_spec(spec)
        }
        Some(file) => validate_config(file),
        None => validate_config(config),
    }
}

/// A campaign spec file, checked exactly as the daemon checks a record of
/// the campaigns topic (keyed by the spec's own id).
fn validate_spec(file: &Path) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let key = crate::domain::CampaignSpec::from_json(&bytes)
        .map(|s| s.id)
        .unwrap_or_default();
    match crate::ingest::catalog::CampaignCatalog::parse(&key, &bytes) {
        Ok(entry) => {
            println!("{}: ok (campaign {})", file.display(), entry.spec.id);
            ExitCode::SUCCESS
        }
        Err(crate::ingest::catalog::SpecRejection::Invalid { problems, .. }) => {
            eprintln!("{}: invalid campaign spec", file.display());
            for p in problems {
                eprintln!("  {p}");
            }
            ExitCode::FAILURE
        }
    }
}

fn validate_config(file: &Path) -> ExitCode {
    match Config::load(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: invalid\n{e}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// `--delimiter`: one ASCII character, or `tab`.
fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() && !s.as_bytes()[0].is_ascii_alphanumeric() => {
            Ok(s.as_bytes()[0])
        }
        _ => Err(format!(
            "{s:?} is not a separator: give one character such as , ; | or the word tab"
        )),
    }
}

fn audience_import(
    campaign: &str,
    brokers: Option<String>,
    config_path: &Path,
    dry_run: bool,
    file: &Path,
    options: crate::import::ImportOptions,
    (problems_out, spec): (Option<&Path>, Option<&Path>),
) -> anyhow::Result<()> {
    let config = load_or_default(config_path)?;
    let brokers = brokers.unwrap_or_else(|| config.kafka.brokers.clone());
    let bytes =
        std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
    let path = file.display().to_string();
    let (records, mut report) = crate::import::parse_bytes(
        &bytes,
        &path,
        campaign,
        config.dispatch.default_region.as_deref(),
        &options,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The campaign's spec: --spec, else the one the daemon applies (the
    // campaigns topic), so every row is checked as staging will check it.
    let found = match spec {
        Some(spec_path) => Some((
            spec_path.display().to_string(),
            std::fs::read(spec_path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", spec_path.display()))?,
        )),
        None => {
            let topic = &config.kafka.topics.campaigns;
            match rt.block_on(crate::ops::topic_specs(&config, &brokers)) {
                Ok(specs) => match specs.get(campaign) {
                    Some(bytes) => {
                        Some((format!("the spec of {campaign} on {topic}"), bytes.clone()))
                    }
                    None => {
                        eprintln!("note: {topic} has no spec for {campaign} yet: rows are checked for their shape only (give --spec FILE to check them against the template)");
                        None
                    }
                },
                Err(e) => {
                    eprintln!("note: the spec was not read from {topic} ({e:#}): rows are checked for their shape only (give --spec FILE to check them against the template)");
                    None
                }
            }
        }
    };
    if let Some((from, text)) = found {
        let (spec, compiled) = crate::domain::CampaignSpec::from_json_validated(&text)
            .map_err(|e| anyhow::anyhow!("{from}: {e}"))?;
        if spec.id != campaign {
            anyhow::bail!(
                "{from} is the spec of campaign {}, not of {campaign}; give the spec of the campaign you import for",
                spec.id
            );
        }
        eprintln!("rows checked against {from}");
        report.check_against(
            &records,
            &spec,
            &compiled,
            config.dispatch.default_region.as_deref(),
        );
    }
    eprint!("{}", report.render(20));
    if let Some(out) = problems_out {
        let n = report
            .write_problems(out)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
        eprintln!("{n} problems written to {}", out.display());
    } else if report.problem_count() > 20 {
        eprintln!(
            "(add --problems-out FILE to get all {} problems as CSV)",
            report.problem_count()
        );
    }
    if dry_run {
        eprintln!("dry run: nothing produced");
        return Ok(());
    }
    // Say in seconds when the brokers cannot be reached, not after the
    // producer's 60 s timeout on every record.
    rt.block_on(crate::import::probe(
        &brokers,
        &crate::app::kafka_extra(&config),
    ))?;
    let pb = crate::import::progress_bar(records.len() as u64, "producing");
    let produced = rt.block_on(crate::import::produce(
        &records,
        &brokers,
        &config.kafka.topics.audience,
        &crate::app::kafka_extra(&config),
        Some(&pb),
    ))?;
    pb.finish();
    println!(
        "produced {produced} records for campaign {campaign} to {} on {brokers}",
        config.kafka.topics.audience
    );
    Ok(())
}

fn sandbox(
    listen: Option<std::net::SocketAddr>,
    webhook_url: Option<String>,
    app_secret: Option<String>,
    per_number_mps: Option<f64>,
    config: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut cfg = match config {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            toml::from_str::<crate::sandbox::SandboxConfig>(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => crate::sandbox::SandboxConfig::default(),
    };
    if let Some(listen) = listen {
        cfg.listen = listen;
    }
    if webhook_url.is_some() {
        cfg.webhook_url = webhook_url;
    }
    if let Some(secret) = app_secret {
        cfg.app_secret = secret;
    }
    let listen = cfg.listen;
    if let Some(mps) = per_number_mps {
        cfg.per_number_mps = mps;
    }
    crate::app::init_logging(crate::config::LogFormat::Pretty, "info");
    crate::sandbox::run_blocking_with(cfg, |url| {
        eprintln!(
            "sandbox listening on {url} (POST /{{version}}/{{phone_number_id}}/messages, GET /sandbox/stats)"
        )
    })
    .map_err(|e| anyhow::anyhow!("sandbox on {listen}: {e}"))
}

fn store_init(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    if config.store.backend != crate::config::StoreBackend::Scylla {
        anyhow::bail!(
            "store.backend is \"embedded\" in {}: the embedded store needs no schema (set store.backend = \"scylla\" and [store.scylla] to initialise ScyllaDB)",
            config_path.display()
        );
    }
    let s = &config.store.scylla;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let applied = rt.block_on(crate::store::scylladb::init_schema(s))?;
    println!(
        "ScyllaDB at {}: keyspace {} ready ({} statements applied, each IF NOT EXISTS):",
        s.nodes.join(", "),
        s.keyspace,
        applied.len()
    );
    for statement in applied {
        let head: String = statement.chars().take(100).collect();
        println!("  {head}{}", if statement.len() > 100 { " …" } else { "" });
    }
    Ok(())
}

fn store_check(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let started = std::time::Instant::now();
        let store = crate::app::open_existing_store(&config).await?;
        store.ping().await?;
        let campaigns = store.list_campaigns().await?.len();
        println!(
            "store ok: {:?} backend, {campaigns} campaigns, answered in {} ms",
            config.store.backend,
            started.elapsed().as_millis()
        );
        Ok(())
    })
}

fn requeue(
    campaign: &str,
    state: &str,
    class: Option<&str>,
    older_than: Option<&str>,
    dry_run: bool,
    config_path: &Path,
) -> anyhow::Result<()> {
    let from = crate::requeue::parse_selection(state, class).map_err(anyhow::Error::msg)?;
    let age = older_than
        .map(crate::requeue::parse_age)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--older-than {e}"))?;
    let config = Config::load(config_path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = crate::app::open_store(&config).await?;
        let staged = crate::report::CampaignSummary::compute(store.as_ref(), campaign).await?.staged;
        if staged == 0 {
            anyhow::bail!("campaign {campaign} has no contacts in this store (check --config and the campaign id)");
        }
        let pb = crate::import::progress_bar(staged, if dry_run { "checking" } else { "requeueing" });
        let summary = crate::requeue::requeue(store.as_ref(), campaign, &from, age, dry_run, chrono::Utc::now(), |n| pb.set_position(n)).await?;
        pb.finish_and_clear();
        let what = match &from.class {
            Some(c) => format!("{} ({c})", from.state),
            None => from.state.to_string(),
        };
        if dry_run {
            println!("{campaign}: {} {what} contacts would be requeued (dry run: nothing changed)", summary.matched);
        } else {
            println!("{campaign}: {} of {} {what} contacts requeued; the running daemon sends them at the campaign's pace", summary.requeued, summary.matched);
        }
        if from.state == crate::domain::DispatchState::Unknown && summary.matched > 0 {
            println!("duplicate risk: an unknown request may have reached WhatsApp (there is no idempotency key); up to {} people may get the message twice", summary.matched);
        }
        Ok(())
    })
}

fn report(
    campaign: &str,
    format: crate::report::Format,
    out: Option<PathBuf>,
    summary: bool,
    options: crate::report::ExportOptions,
    config_path: &Path,
) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = crate::app::open_existing_store(&config).await?;
        let stored = store.get_campaign(campaign).await?;
        if stored.is_none() && store.scan_dispatches(campaign, None, 1).await?.is_empty() {
            let place = match config.store.backend {
                crate::config::StoreBackend::Embedded => config.store.embedded.data_dir.display().to_string(),
                crate::config::StoreBackend::Scylla => format!("keyspace {}", config.store.scylla.keyspace),
            };
            let mut known: Vec<String> = store.list_campaigns().await?.into_iter().map(|c| c.spec.id).collect();
            known.sort();
            let listed = crate::ops::holding(&known.iter().map(String::as_str).collect::<Vec<_>>());
            anyhow::bail!("campaign {campaign} is not in the store at {place} ({listed}); check --campaign and --config");
        }
        let kind = stored.as_ref().map(|c| c.spec.kind);
        // The spec in the store names the steps, orders them and says
        // their templates.
        let spec = stored.map(|c| c.spec);
        let journey = spec.as_ref().and_then(|s| s.journey().ok());
        let journey = journey.as_ref();
        if summary {
            let mut s = crate::report::CampaignSummary::compute(store.as_ref(), campaign).await?;
            s.kind = kind;
            if let Some(card) = &config.pricing {
                s.price(card);
            }
            let text = match format {
                crate::report::Format::Json => serde_json::to_string_pretty(&s.view(journey))? + "\n",
                crate::report::Format::Csv => s.render(journey),
                crate::report::Format::Xlsx => anyhow::bail!("--summary is text or JSON: use it with --format csv (text) or --format json; --format xlsx is for the per-contact export"),
            };
            match out {
                Some(path) => std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?,
                None => print!("{text}"),
            }
            return Ok(());
        }
        match out {
            Some(path) => {
                let file = std::fs::File::create(&path).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
                let staged = crate::report::CampaignSummary::compute(store.as_ref(), campaign).await?.staged;
                let pb = crate::import::progress_bar(staged, "exporting");
                let n = crate::report::export(store.as_ref(), campaign, format, spec.as_ref(), options, std::io::BufWriter::new(file), Some(&pb)).await?;
                pb.finish();
                eprintln!("{n} contacts written to {}", path.display());
            }
            None => {
                if format == crate::report::Format::Xlsx && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    anyhow::bail!("a workbook is binary: give --out FILE.xlsx (or redirect standard output to a file)");
                }
                crate::report::export(store.as_ref(), campaign, format, spec.as_ref(), options, std::io::stdout().lock(), None).await?;
            }
        }
        Ok(())
    })
}

fn campaigns(command: CampaignsCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match command {
        CampaignsCommand::List { target, json } => rt.block_on(campaigns_read(&target, None, json)),
        CampaignsCommand::Show { id, target, json } => {
            rt.block_on(campaigns_read(&target, Some(&id), json))
        }
        CampaignsCommand::Pause { id, target } => {
            rt.block_on(campaigns_change(&target, &id, crate::ops::Change::Pause))
        }
        CampaignsCommand::Resume { id, target } => {
            rt.block_on(campaigns_change(&target, &id, crate::ops::Change::Resume))
        }
        CampaignsCommand::End { id, target, yes } => {
            if !yes {
                anyhow::bail!(
                    "ending {id} cannot be undone: it never sends again, and its contacts become free for other campaigns; run `wadispatch campaigns end {id} --yes` to confirm, or `campaigns pause {id}` to stop it for now"
                );
            }
            rt.block_on(campaigns_change(&target, &id, crate::ops::Change::End))
        }
    }
}

/// The config of a command that works without one (`audience import`,
/// `campaigns`): the file when it exists, else the defaults (the default
/// brokers, a daemon on the default admin port).
fn load_or_default(path: &Path) -> anyhow::Result<Config> {
    if path.exists() {
        Ok(Config::load(path)?)
    } else {
        Ok(Config::default())
    }
}

/// `campaigns list` and `campaigns show`: the running daemon's view, else
/// the store's.
async fn campaigns_read(
    target: &CampaignsTarget,
    one: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    use crate::ops::{self, Live};
    let config = load_or_default(&target.config)?;
    let admin = ops::admin_url(&config, target.admin.as_deref());
    let why_store = match ops::fetch_live(&admin).await? {
        Live::Answered(all) => {
            let lines = ops::live_lines(&all)?;
            match one {
                None if json => println!("{}", serde_json::to_string_pretty(&lines)?),
                None => {
                    eprintln!("from the daemon at {admin}");
                    print!("{}", ops::render_table(&lines));
                }
                Some(id) => {
                    let Some(raw) = all.iter().find(|v| v["id"] == id) else {
                        let known: Vec<&str> = lines.iter().map(|l| l.id.as_str()).collect();
                        anyhow::bail!("the daemon at {admin} does not know campaign {id} (it has: {}); check the id", known.join(", "));
                    };
                    if json {
                        println!("{}", serde_json::to_string_pretty(raw)?);
                    } else {
                        eprintln!("from the daemon at {admin}");
                        print!("{}", render_live(raw));
                    }
                }
            }
            return Ok(());
        }
        Live::NoDaemon(why) => why,
    };
    let store = crate::app::open_existing_store(&config).await.map_err(|e| {
        anyhow::anyhow!("{why_store}, and the store cannot be read: {e:#}. If the daemon runs, give its admin address with --admin")
    })?;
    let total = match one {
        Some(_) => 1,
        None => store.list_campaigns().await?.len() as u64,
    };
    let pb = crate::import::progress_bar(total, "counting");
    let stored = crate::ops::read_store(store.as_ref(), one, |_| pb.inc(1)).await?;
    pb.finish_and_clear();
    let lines: Vec<_> = stored.iter().map(crate::ops::Stored::line).collect();
    match one {
        None if json => println!("{}", serde_json::to_string_pretty(&lines)?),
        None => {
            eprintln!("from the store ({why_store}: live rates, ETA and waits need the daemon)");
            print!("{}", ops::render_table(&lines));
        }
        Some(id) => {
            let Some(s) = stored.first() else {
                let mut known: Vec<String> = store
                    .list_campaigns()
                    .await?
                    .into_iter()
                    .map(|c| c.spec.id)
                    .collect();
                known.sort();
                let listed =
                    crate::ops::holding(&known.iter().map(String::as_str).collect::<Vec<_>>());
                anyhow::bail!("campaign {id} is not in the store ({why_store}); {listed}");
            };
            let journey = s.record.spec.journey().ok();
            if json {
                let out = serde_json::json!({
                    "campaign": lines[0],
                    "summary": s.summary.view(journey.as_ref()),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                eprintln!("from the store ({why_store})");
                let l = &lines[0];
                println!("campaign  {} ({}), {}", l.id, s.record.spec.name, l.kind);
                println!(
                    "state     desired {}, observed {}",
                    l.desired_state,
                    l.observed_state.as_deref().unwrap_or("-")
                );
                if let Some(h) = &l.halted {
                    println!("halted    {h}");
                }
                print!("{}", s.summary.render(journey.as_ref()));
            }
        }
    }
    Ok(())
}

/// One campaign of the daemon's `/campaigns` in words.
fn render_live(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let map = |k: &str| -> String {
        v[k].as_object()
            .filter(|m| !m.is_empty())
            .map(|m| {
                m.iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "-".into())
    };
    let mut out = String::new();
    let _ = writeln!(out, "campaign  {} ({}), {}", s("id"), s("name"), s("kind"));
    let _ = writeln!(
        out,
        "state     desired {}, observed {}",
        s("desired_state"),
        s("observed_state")
    );
    for key in ["segment", "trigger", "goal"] {
        if let Some(text) = v[key].as_str() {
            let _ = writeln!(out, "{key:<9} {text}");
        }
    }
    let _ = writeln!(
        out,
        "contacts  {} staged, {} pending, {} deferred, {} in flight, {} waiting a later step",
        n("staged"),
        n("pending"),
        n("deferred"),
        n("in_flight"),
        n("waiting")
    );
    if let Some(funnel) = v["funnel"].as_array() {
        let stages: Vec<String> = funnel
            .iter()
            .map(|st| {
                let stage = st["stage"].as_str().unwrap_or("?");
                match st["percent"].as_f64() {
                    Some(p) => format!("{stage} {} ({p:.1}%)", st["contacts"]),
                    None => format!("{stage} {}", st["contacts"]),
                }
            })
            .collect();
        let _ = writeln!(out, "funnel    {}", stages.join(", "));
    }
    let _ = writeln!(out, "by state  {}", map("by_state"));
    let _ = writeln!(out, "excluded  {}", map("excluded_by_reason"));
    let _ = writeln!(out, "failed    {}", map("failed_by_class"));
    let _ = writeln!(out, "held      {}", map("held_by_meta"));
    let _ = writeln!(out, "billable  {}", map("billable"));
    let rate = |k: &str| {
        v[k].as_f64()
            .map(|r| format!("{r:.1}/s"))
            .unwrap_or_else(|| "-".into())
    };
    let eta = v["eta_seconds"]
        .as_f64()
        .map(crate::ops::duration_words)
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "pace      configured {}, measured {}, ETA {eta}",
        rate("configured_rate"),
        rate("current_rate")
    );
    if let Some(h) = v["halted"].as_str() {
        let _ = writeln!(
            out,
            "halted    {h} (after fixing it: POST /campaigns/{}/clear-halt)",
            s("id")
        );
    }
    if let Some(w) = v["wait_reason"].as_str() {
        let _ = writeln!(out, "waits for {w}");
    }
    let _ = writeln!(out, "counted   {}", s("counted_at"));
    out
}

/// `campaigns pause|resume|end`: the spec on the topic with its new state,
/// published, then what the running daemon shows.
async fn campaigns_change(
    target: &CampaignsTarget,
    id: &str,
    change: crate::ops::Change,
) -> anyhow::Result<()> {
    use crate::ops::{self, Decision};
    let config = load_or_default(&target.config)?;
    let brokers = target
        .brokers
        .clone()
        .unwrap_or_else(|| config.kafka.brokers.clone());
    let topic = &config.kafka.topics.campaigns;
    let specs = ops::topic_specs(&config, &brokers).await?;
    let spec = ops::spec_of(&specs, id, topic)?;
    let current = serde_json::from_slice::<serde_json::Value>(spec)
        .map_err(anyhow::Error::from)
        .and_then(|v| ops::desired_state_of(&v))
        .map_err(|e| anyhow::anyhow!("the spec of {id} on {topic} cannot be read ({e}); the daemon ignores it too: have the upstream publish it again"))?;
    let target_state = match ops::decide(id, current, change) {
        Decision::Publish(state) => state,
        Decision::AlreadyThere(why) => {
            println!("{why}: nothing published");
            return Ok(());
        }
        Decision::Refused(why) => anyhow::bail!(why),
    };
    let bytes = ops::with_state(id, spec, target_state)?;
    let (partition, offset) = ops::publish(&config, &brokers, id, &bytes, change).await?;
    println!("campaign {id}: state {current} -> {target_state}, published to {topic} (partition {partition}, offset {offset})");
    if config.campaigns.get(id).is_some_and(|o| o.paused) && change == ops::Change::Resume {
        println!("note: the config file pauses it too ([campaigns.\"{id}\"] paused = true): remove that line and reload (SIGHUP) for it to send");
    }
    let admin = ops::admin_url(&config, target.admin.as_deref());
    match ops::await_applied(&admin, id, target_state).await {
        Some(observed) => println!("the daemon at {admin} applied it: desired {target_state}, observed {observed}"),
        None => println!("no daemon at {admin} showed it yet: every instance applies it when it reads {topic} (within seconds while running, at start otherwise)"),
    }
    println!("the upstream that publishes this campaign's spec stays its source of truth: its next version of the spec replaces this state");
    Ok(())
}
