//! `safegrid`: the broker's command line (serve, demo, token, audit verify).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use broker::app::{self, ServeOptions};
use broker::auth::TokenRequest;
use broker::config::Config;
use broker::demo::{self, DemoOptions};

#[derive(Parser, Debug)]
#[command(name = "safegrid", version, about = "SafeGrid: secure data-exchange broker for street-level public-safety governance")]
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
        #[arg(long)]
        data_dir: PathBuf,
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
        /// Lifetime, e.g. 1h, 30m.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        #[arg(long)]
        master_key: Option<PathBuf>,
    },
    /// Rebuild the search index (<DATA_DIR>/index) from the store, offline.
    Reindex {
        #[arg(long, env = "SAFEGRID_DATA_DIR")]
        data_dir: PathBuf,
        /// Master key file; default <DATA_DIR>.master-key. SAFEGRID_MASTER_KEY overrides.
        #[arg(long)]
        master_key: Option<PathBuf>,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Verify a log directory offline with only the checkpoint public key.
    Verify {
        #[arg(long)]
        log_dir: PathBuf,
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

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SAFEGRID_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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
            let config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
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
            runtime()?.block_on(demo::run(DemoOptions {
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
            let master = app::load_master_key(&data_dir, master_key.as_deref(), false)?;
            let signer = app::dev_token_signer(&data_dir, &master)?;
            let token = signer.sign(&TokenRequest {
                sub,
                name,
                roles,
                jurisdiction,
                dept,
                ttl: Duration::from(ttl),
            })?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Reindex {
            data_dir,
            master_key,
        } => {
            let started = std::time::Instant::now();
            let entities = broker::search::reindex(&data_dir, master_key.as_deref())?;
            println!(
                "indexed {entities} entities into {} in {:.1}s",
                data_dir.join("index").display(),
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    log_dir,
                    public_key,
                    checkpoint,
                    request_id,
                },
        } => Ok(broker::audit_cli::verify(&log_dir, &public_key, checkpoint.as_deref(), request_id)),
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
