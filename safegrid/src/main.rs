//! `safegrid`: the broker's command line (serve, demo, token, audit verify).
//!
//! The long commands (`reindex`, `keys reencrypt`, `keys reblind`, `backup`, `restore`,
//! `connector run`, `demo`) draw a progress bar on stderr when it is a terminal, and nothing
//! extra otherwise ([`progress`]).

mod audit_cli;
mod demo_run;
mod ops_cli;
mod progress;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use broker::app::{self, ServeOptions};
use broker::auth::TokenRequest;
use demo_run::DemoOptions;

/// mimalloc instead of the system allocator: about 50 % more profile lookups per second, and
/// a lower peak over a long ingest than with glibc's per-thread arenas (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "safegrid",
    version,
    about = "SafeGrid: secure data-exchange broker for street-level public-safety governance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker.
    Serve {
        /// Data directory (store, audit log, dev material).
        #[arg(long, env = "SAFEGRID_DATA_DIR")]
        data_dir: PathBuf,
        /// Address to listen on (default 127.0.0.1:8443, or `listen` in the config).
        #[arg(long, env = "SAFEGRID_LISTEN")]
        listen: Option<SocketAddr>,
        /// Configuration file (TOML).
        #[arg(long, env = "SAFEGRID_CONFIG")]
        config: Option<PathBuf>,
        /// Master key file (64 hex digits); default <DATA_DIR>.master-key. SAFEGRID_MASTER_KEY overrides.
        #[arg(long)]
        master_key: Option<PathBuf>,
        /// Development mode: self-signed TLS certificate and the instance's own JWT key.
        #[arg(long)]
        dev: bool,
        /// Serve plain HTTP (only behind a TLS-terminating proxy).
        #[arg(long)]
        insecure_http: bool,
    },
    /// Generate, publish and serve six departments' synthetic data for one street.
    Demo {
        /// Number of residents to generate.
        #[arg(long, default_value_t = 20_000)]
        residents: usize,
        /// Data directory.
        #[arg(long, default_value = "safegrid-demo")]
        data_dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = app::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Seed of the generator.
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Exit after publishing instead of serving.
        #[arg(long)]
        no_serve: bool,
    },
    /// Print a token signed by the instance's dev key.
    Token {
        /// Data directory of the broker (store, audit log, dev material).
        #[arg(long)]
        data_dir: PathBuf,
        /// Subject (`sub` claim): the staff member's id.
        #[arg(long)]
        sub: String,
        /// Role (repeatable).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Division code the token covers (repeatable).
        #[arg(long)]
        jurisdiction: Vec<String>,
        /// Department code, for publishers and analysts.
        #[arg(long)]
        dept: Option<String>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 1h, 30m; at most 12h (the broker refuses longer-lived tokens).
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// Master key file (64 hex digits); default <DATA_DIR>.master-key. SAFEGRID_MASTER_KEY overrides.
        #[arg(long)]
        master_key: Option<PathBuf>,
    },
    /// Rebuild the search index (<DATA_DIR>/index) from the store, offline: the embedded
    /// store of the data directory, or the PostgreSQL store the configuration names.
    Reindex {
        /// Data directory of the broker (store, audit log, dev material).
        #[arg(long, env = "SAFEGRID_DATA_DIR")]
        data_dir: PathBuf,
        /// Configuration file (TOML); only its [store] section is used here.
        #[arg(long, env = "SAFEGRID_CONFIG")]
        config: Option<PathBuf>,
        /// Master key file; default <DATA_DIR>.master-key. SAFEGRID_MASTER_KEY overrides.
        #[arg(long)]
        master_key: Option<PathBuf>,
    },
    /// Rewrite the store file of a stopped broker without its free and half-empty pages (after
    /// a first full load, or a large deletion), offline: a verified copy beside it replaces
    /// it, so it needs free disk space of about the compacted size.
    Compact {
        /// Data directory of the broker (store, audit log, dev material).
        #[arg(long, env = "SAFEGRID_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Copy a stopped broker's embedded store into an empty PostgreSQL database (then serve
    /// with `[store] backend = "postgres"`), and verify the copy: the same digest over every
    /// entry, the same counts, and a sample of rows whose links resolve and whose sealed fields
    /// open with the master key.
    Migrate {
        /// Data directory of the broker whose store is copied (store.redb).
        #[arg(long, env = "SAFEGRID_DATA_DIR")]
        data_dir: PathBuf,
        /// The PostgreSQL database, postgres://user:password@host/db; better given as
        /// SAFEGRID_STORE_URL, which keeps the password off the command line.
        #[arg(long, env = "SAFEGRID_STORE_URL", hide_env_values = true)]
        to: String,
        /// Schema for the store's tables (must be empty or absent).
        #[arg(long, env = "SAFEGRID_STORE_SCHEMA", default_value = "safegrid")]
        schema: String,
        /// Master key file; default <DATA_DIR>.master-key. SAFEGRID_MASTER_KEY overrides.
        #[arg(long)]
        master_key: Option<PathBuf>,
    },
    /// Department connectors.
    Connector {
        #[command(subcommand)]
        command: ConnectorCommand,
    },
    /// Department client certificates (a CA for trials).
    Certs {
        #[command(subcommand)]
        command: ops_cli::CertsCommand,
    },
    /// Data-key and master-key rotation.
    Keys {
        #[command(subcommand)]
        command: ops_cli::KeysCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ops_cli::ConfigCommand,
    },
    /// Copy the store and audit log of a stopped broker to a new directory.
    Backup {
        /// Data directory of the broker (store, audit log, dev material).
        #[arg(long, env = "SAFEGRID_DATA_DIR")]
        data_dir: PathBuf,
        /// Directory to write the backup into (must not exist yet).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into an empty data directory.
    Restore {
        /// Backup directory to restore from.
        #[arg(long)]
        from: PathBuf,
        /// Data directory of the broker (store, audit log, dev material).
        #[arg(long, env = "SAFEGRID_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConnectorCommand {
    /// Run a connector once from its configuration and deliver what is new: to a broker over
    /// HTTPS as the department's publisher, or (--dry-run) to the terminal. A configuration
    /// with a `[sink]` section runs the other way: it pulls a subscription's feed into the
    /// department's PostgreSQL table, from the cursor kept there.
    Run {
        /// The connector configuration (TOML).
        config: PathBuf,
        /// Where the connector keeps its checkpoints and processed-file hashes (a sink keeps
        /// its cursor in its database instead).
        #[arg(long, default_value = "safegrid-connector-state")]
        state_dir: PathBuf,
        /// Print the mapped records and failures instead of publishing.
        #[arg(long)]
        dry_run: bool,
        /// Broker base URL, e.g. https://safegrid.example.gov.cn:8443.
        #[arg(long, env = "SAFEGRID_BROKER_URL", required_unless_present = "dry_run")]
        broker: Option<String>,
        /// The token: the department publisher's, or for a sink the department subscriber's.
        #[arg(long, env = "SAFEGRID_TOKEN", required_unless_present = "dry_run")]
        token: Option<String>,
        /// CA certificate (PEM) the broker's certificate chains to.
        #[arg(long, env = "SAFEGRID_CA_CERT", required_unless_present = "dry_run")]
        ca_cert: Option<PathBuf>,
        /// The department's client certificate (PEM), for a broker that requires mTLS.
        #[arg(long, requires = "client_key")]
        client_cert: Option<PathBuf>,
        /// The client certificate's private key (PEM).
        #[arg(long, requires = "client_cert")]
        client_key: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Verify a log directory offline with only the checkpoint public key.
    Verify {
        /// The audit log directory (<DATA_DIR>/audit).
        #[arg(long)]
        log_dir: PathBuf,
        /// The checkpoint public key (checkpoint-public.key) that verifies the signatures.
        #[arg(long)]
        public_key: PathBuf,
        /// A previously saved checkpoint (signed note) the log must extend.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Also prove that the record of this request id is included.
        #[arg(long)]
        request_id: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs on stderr: the filter from `SAFEGRID_LOG`, else `RUST_LOG`, else `warn`; readable
/// lines when stderr is a terminal (printed above a progress bar, if one is drawn), one JSON
/// object a line otherwise (for a log collector).
fn init_tracing() {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SAFEGRID_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if std::io::stderr().is_terminal() {
        builder.with_writer(progress::log_writer).try_init()
    } else {
        builder.with_writer(std::io::stderr).json().try_init()
    };
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            data_dir,
            listen,
            config,
            master_key,
            dev,
            insecure_http,
        } => {
            // The file plus SAFEGRID_… environment overrides, validated.
            let config = broker::config_overrides::load(config.as_deref())?;
            runtime()?.block_on(async {
                let broker = app::start(ServeOptions {
                    data_dir,
                    listen,
                    config,
                    master_key,
                    dev,
                    insecure_http,
                })
                .await?;
                println!("SafeGrid is serving at {}", broker.url());
                if let Some(cert) = &broker.dev_certificate {
                    println!("  dev TLS certificate: {}", cert.display());
                }
                wait_for_shutdown_signal().await;
                eprintln!("stopping: draining requests and writing the final audit checkpoint");
                broker.shutdown().await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            residents,
            data_dir,
            listen,
            seed,
            no_serve,
        } => {
            runtime()?.block_on(demo_run::run(DemoOptions {
                residents,
                seed,
                data_dir,
                listen,
                serve: !no_serve,
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            data_dir,
            sub,
            roles,
            jurisdiction,
            dept,
            name,
            ttl,
            master_key,
        } => {
            let ttl = Duration::from(ttl);
            if ttl > broker::auth::DEFAULT_MAX_TOKEN_LIFETIME {
                anyhow::bail!(
                    "--ttl may be at most 12h: the broker refuses tokens valid for longer"
                );
            }
            let master = vault::keys::load_master_key(&data_dir, master_key.as_deref(), false)?;
            let signer = app::dev_token_signer(&data_dir, &master)?;
            let token = signer.sign(&TokenRequest {
                sub,
                name,
                roles,
                jurisdiction: jurisdiction.clone(),
                dept,
                ttl,
            })?;
            println!("{token}");
            describe_jurisdiction(&jurisdiction);
            Ok(ExitCode::SUCCESS)
        }
        Command::Reindex {
            data_dir,
            config,
            master_key,
        } => {
            let started = std::time::Instant::now();
            let store = broker::config_overrides::load(config.as_deref())?.store;
            let bar = progress::Bar::start("reindex", progress::Unit::Items("entities"));
            let entities = match store.postgres() {
                Some(options) => {
                    let store = vault::store::Store::connect(&options).with_context(|| {
                        format!(
                            "connecting to the PostgreSQL store (schema {})",
                            options.schema
                        )
                    })?;
                    search::reindex_store(
                        std::sync::Arc::new(store),
                        &data_dir,
                        master_key.as_deref(),
                        &bar,
                    )
                }
                None => search::reindex_with_progress(&data_dir, master_key.as_deref(), &bar),
            }?;
            drop(bar);
            println!(
                "indexed {entities} entities into {} in {:.1}s",
                data_dir.join("index").display(),
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Compact { data_dir } => ops_cli::compact(&data_dir),
        Command::Migrate {
            data_dir,
            to,
            schema,
            master_key,
        } => ops_cli::migrate(&data_dir, &to, &schema, master_key.as_deref()),
        Command::Connector {
            command:
                ConnectorCommand::Run {
                    config,
                    state_dir,
                    dry_run,
                    broker,
                    token,
                    ca_cert,
                    client_cert,
                    client_key,
                },
        } => runtime()?.block_on(run_connector(ConnectorRun {
            config,
            state_dir,
            dry_run,
            broker_url: broker,
            token,
            ca_cert,
            client_identity: client_cert.zip(client_key),
        })),
        Command::Certs { command } => ops_cli::certs(command),
        Command::Keys { command } => ops_cli::keys(command),
        Command::Config { command } => ops_cli::config(command),
        Command::Backup { data_dir, out } => ops_cli::backup(&data_dir, &out),
        Command::Restore { from, data_dir } => ops_cli::restore(&from, &data_dir),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    log_dir,
                    public_key,
                    checkpoint,
                    request_id,
                },
        } => Ok(audit_cli::verify(
            &log_dir,
            &public_key,
            checkpoint.as_deref(),
            request_id,
        )),
    }
}

/// On a terminal, tells the operator on stderr which divisions a token covers, by name
/// (`110105001: 北京市 朝阳区 街道001`); prints nothing when stderr is not a terminal, where
/// the token alone is the output a script captures.
fn describe_jurisdiction(codes: &[String]) {
    use std::io::IsTerminal as _;
    if codes.is_empty() || !std::io::stderr().is_terminal() {
        return;
    }
    for code in codes {
        let shown = match model::DivisionCode::parse(code) {
            Ok(division) => division
                .display_name()
                .unwrap_or_else(|| "not in the GB/T 2260 table".to_owned()),
            Err(err) => err.to_string(),
        };
        eprintln!("jurisdiction {code}: {shown}");
    }
}

async fn wait_for_shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

struct ConnectorRun {
    config: PathBuf,
    state_dir: PathBuf,
    dry_run: bool,
    broker_url: Option<String>,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
    client_identity: Option<(PathBuf, PathBuf)>,
}

async fn run_connector(run: ConnectorRun) -> anyhow::Result<ExitCode> {
    let ConnectorRun {
        config,
        state_dir,
        dry_run,
        broker_url,
        token,
        ca_cert,
        client_identity,
    } = run;
    broker::tls::install_crypto_provider();
    let config = match connectors::ConnectorFile::load(&config)? {
        connectors::ConnectorFile::Pull(config) => *config,
        // A sink receives a subscription's feed into the department's PostgreSQL; its cursor
        // lives in that database, so it keeps nothing in --state-dir.
        connectors::ConnectorFile::Sink(config) => {
            if dry_run {
                anyhow::bail!("--dry-run is for pull connectors; a sink writes only to its table");
            }
            let (Some(base_url), Some(token), Some(ca_cert)) = (broker_url, token, ca_cert) else {
                anyhow::bail!("--broker, --token and --ca-cert are required");
            };
            let client = match &client_identity {
                Some((cert, key)) => broker::certs::mtls_client(&ca_cert, cert, key)?,
                None => broker::client::https_client(&ca_cert)?,
            };
            let name = config.name();
            let bar = progress::Bar::start(&name, progress::Unit::Items("changes"));
            let report = connectors::feed_sink::run_from_broker(
                &config,
                client,
                &base_url,
                &connectors::Secret::new(token),
                &mut |page: &connectors::feed_sink::PageApplied| {
                    bar.inc(page.changes as u64);
                    bar.eprintln(&format!(
                        "{name}: page {}: {} changes, {} upserts, {} deletes, {} skipped, \
                         cursor {}",
                        page.page,
                        page.changes,
                        page.upserts,
                        page.deletes,
                        page.skipped,
                        page.cursor
                    ));
                },
            )
            .await;
            drop(bar);
            let report = report?;
            eprintln!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(ExitCode::SUCCESS);
        }
    };
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let mut connector = connectors::build(&config, &state_dir)?;
    let label = connector.name().to_owned();
    let report = if dry_run {
        let mut sink = connectors::NdjsonSink::new();
        let bar = progress::Bar::start(&label, progress::Unit::Items("records"));
        let report = connector
            .run(&mut progress::CountingSink {
                inner: &mut sink,
                bar: &bar,
            })
            .await;
        drop(bar);
        let report = report?;
        print!("{}", sink.to_ndjson());
        for failure in &sink.failures {
            eprintln!("rejected: {failure}");
        }
        report
    } else {
        let (Some(base_url), Some(token), Some(ca_cert)) = (broker_url, token, ca_cert) else {
            anyhow::bail!("--broker, --token and --ca-cert are required unless --dry-run");
        };
        let client = match &client_identity {
            Some((cert, key)) => broker::certs::mtls_client(&ca_cert, cert, key)?,
            None => broker::client::https_client(&ca_cert)?,
        };
        let mut sink = broker::connect::HttpSink {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
        };
        let bar = progress::Bar::start(&label, progress::Unit::Items("records"));
        let report = connector
            .run(&mut progress::CountingSink {
                inner: &mut sink,
                bar: &bar,
            })
            .await;
        drop(bar);
        report?
    };
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if report.rejected > 0 || report.mapping_failures > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command and every flag explains itself in `--help`.
    #[test]
    fn every_command_and_flag_has_help_text() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.get_about().is_none() && command.get_long_about().is_none() {
                missing.push(format!("{path}: the command"));
            }
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path}: {id}"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        let command = Cli::command();
        for sub in command.get_subcommands() {
            walk(sub, "safegrid", &mut missing);
        }
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }
}
