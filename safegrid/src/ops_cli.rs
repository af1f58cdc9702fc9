//! Operator commands of the `safegrid` binary: `certs`, `keys`, `config check`, `backup`,
//! `restore`. `main.rs` only routes to them.
//!
//! Guarantees: no command prints a key, a secret or a file's content; key and backup
//! commands work on a data directory no broker is serving (redb opens a store exclusively),
//! except re-encryption, which `serve` also resumes by itself. Re-encryption,
//! re-computation, backup and restore draw a progress bar on a terminal
//! ([`crate::progress`]), and print their result on stdout as before.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Subcommand;

use model::Department;

use vault::store::Store;

use crate::progress::{Bar, Unit};

/// `safegrid certs …`: a certificate authority for department client certificates (trials).
#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create a CA (ca.pem, ca-key.pem, an empty crl.pem) in DIR.
    InitCa {
        /// Directory of the trial CA (its key and certificate).
        #[arg(long)]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a client certificate for a department (CN and OU = the department code).
    Issue {
        /// Directory of the trial CA (its key and certificate).
        #[arg(long)]
        dir: PathBuf,
        /// Department code: gongan, minzheng, weijian, sifa, zhujian, chengguan, yingji or wangge.
        #[arg(long)]
        department: String,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Revoke a certificate by serial number (hex) and rewrite crl.pem.
    Revoke {
        /// Directory of the trial CA (its key and certificate).
        #[arg(long)]
        dir: PathBuf,
        /// Serial number of the certificate to revoke, as `certs issue` printed it.
        #[arg(long)]
        serial: String,
    },
    /// Re-sign crl.pem (do this before its nextUpdate, e.g. daily from cron).
    Crl {
        /// Directory of the trial CA (its key and certificate).
        #[arg(long)]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = broker::certs::DEFAULT_CRL_DAYS)]
        days: i64,
    },
}

/// `safegrid keys …`: data-key, blind-index-key and master-key rotation.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Add a new data-key version for a department; re-encryption of its records to the new
    /// version then runs in the background of `serve` (or with `keys reencrypt`).
    Rotate {
        /// Data directory of the broker (store, audit log, dev material).
        #[arg(long, env = "SAFEGRID_DATA_DIR")]
        data_dir: PathBuf,
        /// Department code: gongan, minzheng, weijian, sifa, zhujian, chengguan, yingji or wangge.
        #[arg(long)]
        department: String,
        /// Master key file (64 hex digits); default <DATA_DIR>.master-key. SAFEGRID_MASTER_KEY overrides.
        #[arg(long)]
        master_key: Option<PathBuf>,
    },
    /// Move a department's sealed fields to its current key version (resumable).
    Reencrypt {
        /// Data directory of the broker (store, audit log, dev material).
        #[arg(long, env = "SAFEGRID_DATA_DIR")]
        data_dir: PathBuf,
        /// Department code: gongan, minzheng, weijian, sifa, zhujian, chengguan, yingji or wangge.
        #[arg(long)]
        department: String,
        /// Stop after this many rows (progress is saved; run again to continue).
        #[arg(long)]
        limit: Option<u64>,
        /// Master key file (64 hex digits); default <DATA_DIR>.master-key. SAFEGRID_MASTER_KEY overrides.
        #[arg(long)]
        master_key: Option<PathBuf>,
    },
    /// Re-wrap every stored key under a new master key (created if the file is missing).
    RotateMaster {
        /// Data directory of the broker (store, audit log, dev material).
        #[arg(long, env = "SAFEGRID_DATA_DIR")]
        data_dir: PathBuf,
        /// The current master key file (SAFEGRID_MASTER_KEY overrides).
        #[arg(long)]
        master_key: Option<PathBuf>,
        /// The new master key file (64 hex digits); created with mode 0600 if missing.
        #[arg(long)]
        new_master_key: PathBuf,
    },
    /// Add a new blind-index key version; the re-computation of every stored blind index and
    /// linkage key under it runs in the background of `serve` (or with `keys reblind`), and
    /// the old version is deleted when it ends. The search index is rebuilt on the next start.
    RotateBlindIndex {
        /// Data directory of the broker (store, audit log, dev material).
        #[arg(long, env = "SAFEGRID_DATA_DIR")]
        data_dir: PathBuf,
        /// Master key file (64 hex digits); default <DATA_DIR>.master-key. SAFEGRID_MASTER_KEY overrides.
        #[arg(long)]
        master_key: Option<PathBuf>,
    },
    /// Re-compute stored blind indexes under the current blind-index key (resumable).
    Reblind {
        /// Data directory of the broker (store, audit log, dev material).
        #[arg(long, env = "SAFEGRID_DATA_DIR")]
        data_dir: PathBuf,
        /// Stop after this many rows (progress is saved; run again to continue).
        #[arg(long)]
        limit: Option<u64>,
        /// Master key file (64 hex digits); default <DATA_DIR>.master-key. SAFEGRID_MASTER_KEY overrides.
        #[arg(long)]
        master_key: Option<PathBuf>,
    },
    /// Key versions and re-encryption progress per department, and the blind-index key.
    Status {
        /// Data directory of the broker (store, audit log, dev material).
        #[arg(long, env = "SAFEGRID_DATA_DIR")]
        data_dir: PathBuf,
        /// Master key file (64 hex digits); default <DATA_DIR>.master-key. SAFEGRID_MASTER_KEY overrides.
        #[arg(long)]
        master_key: Option<PathBuf>,
    },
}

/// `safegrid config …`.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check the configuration file plus SAFEGRID_… overrides; prints OK or every problem.
    Check {
        /// Configuration file (TOML) to check.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Master key file (64 hex digits); default <DATA_DIR>.master-key. SAFEGRID_MASTER_KEY overrides.
        #[arg(long)]
        master_key: Option<PathBuf>,
    },
}

fn department(code: &str) -> anyhow::Result<Department> {
    Department::parse(code).map_err(|_| anyhow::anyhow!("unknown department code {code:?}"))
}

pub fn certs(command: CertsCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertsCommand::InitCa { dir, days } => {
            let cert = broker::certs::init_ca(&dir, days)?;
            println!("CA certificate: {}", cert.display());
            println!("CRL: {}", dir.join(broker::certs::CRL).display());
            println!(
                "configure [mtls] client_ca_file and crl_files with these; keep ca-key.pem offline"
            );
        }
        CertsCommand::Issue {
            dir,
            department: code,
            days,
        } => {
            let issued = broker::certs::issue(&dir, department(&code)?, days)?;
            println!("certificate: {}", issued.cert.display());
            println!("key: {}", issued.key.display());
            println!("serial: {}", issued.serial);
        }
        CertsCommand::Revoke { dir, serial } => {
            let crl = broker::certs::revoke(&dir, &serial)?;
            println!(
                "revoked; CRL rewritten: {} (brokers reload it within mtls.reload_seconds)",
                crl.display()
            );
        }
        CertsCommand::Crl { dir, days } => {
            let crl = broker::certs::write_crl(&dir, days)?;
            println!("CRL re-signed: {}", crl.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn open(
    data_dir: &Path,
    master_key: Option<&Path>,
) -> anyhow::Result<(Store, vault::crypto::MasterKey)> {
    let master = vault::keys::load_master_key(data_dir, master_key, false)?;
    let store = Store::open(&data_dir.join("store.redb"))
        .context("opening the store (a serving broker holds it: stop the broker first)")?;
    Ok((store, master))
}

pub fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Rotate {
            data_dir,
            department: code,
            master_key,
        } => {
            let (store, master) = open(&data_dir, master_key.as_deref())?;
            let version = engine::rotation::rotate_data_key(&store, &master, department(&code)?)?;
            println!("{code}: data key version {version} is current; re-encryption resumes when the broker starts (or run `safegrid keys reencrypt`)");
        }
        KeysCommand::Reencrypt {
            data_dir,
            department: code,
            limit,
            master_key,
        } => {
            let (store, master) = open(&data_dir, master_key.as_deref())?;
            let ring = vault::keys::load_key_ring(&store, &master)?;
            let department = department(&code)?;
            let bar = Bar::start(&format!("re-encrypting {code}"), Unit::Items("rows"));
            let report = engine::rotation::reencrypt_with_progress(
                &store,
                &ring,
                department,
                limit,
                &AtomicBool::new(false),
                &bar,
            );
            drop(bar);
            let report = report?;
            let p = &report.progress;
            println!(
                "{code}: {} rows this run; {} rows, {} fields re-sealed to version {} in total; {}",
                report.rows_this_run,
                p.rows,
                p.fields,
                p.target,
                if p.done {
                    "done"
                } else {
                    "not done yet: run again to continue"
                }
            );
        }
        KeysCommand::RotateBlindIndex {
            data_dir,
            master_key,
        } => {
            let (store, master) = open(&data_dir, master_key.as_deref())?;
            let version = engine::rotation::rotate_blind_key(&store, &master)?;
            println!("blind-index key version {version} is current; stored indexes are re-computed when the broker starts (or run `safegrid keys reblind`), and the search index is rebuilt on that start");
        }
        KeysCommand::Reblind {
            data_dir,
            limit,
            master_key,
        } => {
            let (store, master) = open(&data_dir, master_key.as_deref())?;
            let ring = vault::keys::load_key_ring(&store, &master)?;
            let bar = Bar::start("re-computing blind indexes", Unit::Items("rows"));
            let report = engine::rotation::reblind_with_progress(
                &store,
                &ring,
                limit,
                &AtomicBool::new(false),
                &bar,
            );
            drop(bar);
            let report = report?;
            let p = &report.progress;
            println!(
                "blind index: {} rows this run; {} rows visited, {} re-keyed to version {} in total; {}",
                report.rows_this_run,
                p.rows,
                p.relinked,
                p.target,
                if p.done {
                    format!("done (retired versions {:?})", p.retired)
                } else {
                    "not done yet: run again to continue".to_owned()
                }
            );
        }
        KeysCommand::RotateMaster {
            data_dir,
            master_key,
            new_master_key,
        } => {
            let (store, old) = open(&data_dir, master_key.as_deref())?;
            let new = vault::crypto::MasterKey::from_file(&new_master_key, true)?;
            let count = engine::rotation::rotate_master(&data_dir, &store, &old, &new)?;
            println!(
                "{count} keys re-wrapped under {}; start the broker with --master-key {} (and unset SAFEGRID_MASTER_KEY or update it); keep the old key until a backup under the new one exists",
                new_master_key.display(),
                new_master_key.display()
            );
        }
        KeysCommand::Status {
            data_dir,
            master_key,
        } => {
            let (store, master) = open(&data_dir, master_key.as_deref())?;
            let ring = vault::keys::load_key_ring(&store, &master)?;
            for department in Department::ALL {
                let progress = engine::rotation::progress(&store, department)?;
                println!(
                    "{}: current version {}; re-encryption {}",
                    department.code(),
                    ring.current_version(department).unwrap_or(0),
                    match progress {
                        None => "never needed".to_owned(),
                        Some(p) if p.done => format!("done ({} rows, {} fields)", p.rows, p.fields),
                        Some(p) => format!("pending ({} rows so far)", p.rows),
                    }
                );
            }
            let retiring = ring.blind_retiring_versions();
            println!(
                "blind index: current version {}; {}",
                ring.blind_version(),
                match engine::rotation::reblind_progress(&store)? {
                    None => "re-computation never needed".to_owned(),
                    Some(p) if p.done => format!(
                        "re-computation done ({} rows re-keyed, versions {:?} retired)",
                        p.relinked, p.retired
                    ),
                    Some(p) => format!(
                        "re-computation pending ({} rows so far; versions {retiring:?} still loaded)",
                        p.rows
                    ),
                }
            );
            println!(
                "text normalisation: keyed links computed under version {}; this binary's is {}",
                engine::rotation::keyed_links_normalisation(&store)?.unwrap_or(1),
                chinese_text::NORMALISATION_VERSION
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn config(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Check { config, master_key } = command;
    let path = broker::config_overrides::config_path(config);
    let problems = broker::config_overrides::check(path.as_deref(), master_key.as_deref());
    if problems.is_empty() {
        println!("OK");
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &problems {
        println!("{problem}");
    }
    Ok(ExitCode::FAILURE)
}

pub fn backup(data_dir: &Path, out: &Path) -> anyhow::Result<ExitCode> {
    let bar = Bar::start("backup", Unit::Bytes);
    let manifest = vault::backup::backup_offline_with_progress(data_dir, out, &bar);
    drop(bar);
    let manifest = manifest?;
    println!(
        "backup written to {} ({} files); the master key is not in it",
        out.display(),
        manifest.files.len()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn compact(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let path = data_dir.join("store.redb");
    if !path.is_file() {
        anyhow::bail!("no store at {}: is this a data directory?", path.display());
    }
    let started = std::time::Instant::now();
    let bar = Bar::start("compact", Unit::Items("rows"));
    let done = vault::store::compact_with_progress(&path, &bar);
    drop(bar);
    let done = done.with_context(|| {
        format!(
            "compacting {} (stop the broker that uses it first; the disk needs free space for              a copy of about the compacted size; the store is left as it was)",
            path.display()
        )
    })?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "compacted {}: {:.1} MiB -> {:.1} MiB in {:.1}s",
        path.display(),
        mib(done.bytes_before),
        mib(done.bytes_after),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn migrate(
    data_dir: &Path,
    url: &str,
    schema: &str,
    master_key: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let path = data_dir.join("store.redb");
    if !path.is_file() {
        anyhow::bail!("no store at {}: is this a data directory?", path.display());
    }
    let started = std::time::Instant::now();
    let (source, master) = open(data_dir, master_key)?;
    let options = vault::store::PostgresOptions::new(url).schema(schema);
    let target = Store::connect(&options)
        .with_context(|| format!("connecting to the PostgreSQL store (schema {schema})"))?;
    let bar = Bar::start("migrate", Unit::Items("rows"));
    let done = vault::migrate::migrate(&source, &target, &master, &bar);
    drop(bar);
    let done = done?;
    let entries: Vec<String> = done
        .entries
        .iter()
        .map(|(table, n)| format!("{table} {n}"))
        .collect();
    println!(
        "migrated {} into PostgreSQL schema {schema} in {:.1}s: {}",
        data_dir.display(),
        started.elapsed().as_secs_f64(),
        entries.join(", ")
    );
    println!(
        "verified: digest {} on both sides, change sequence {}, {} sampled rows linked and {} sealed fields opened",
        done.digest, done.change_seq, done.sampled_rows, done.opened_fields
    );
    match migrate_audit(&data_dir.join("audit"), &target).with_context(|| {
        format!(
            "copying the access log (the store is copied: drop schema {schema} before running \
             migrate again)"
        )
    })? {
        Some(copied) => println!("{copied}"),
        None => println!("access log: none in {}", data_dir.display()),
    }
    println!(
        "next: serve with [store] backend = \"postgres\" (SAFEGRID_STORE_BACKEND=postgres, SAFEGRID_STORE_URL, SAFEGRID_STORE_SCHEMA={schema}) and the same master key; the search index is rebuilt from the database on first start, and the access log is the database's, each broker's audit/ directory a replica of it"
    );
    Ok(ExitCode::SUCCESS)
}

/// Copies a stopped broker's access log in `dir` (verified first, with its own public key)
/// into the schema's shared log, with its checkpoints, and recomputes the root from what the
/// database then holds. `None` if there is no log.
fn migrate_audit(dir: &Path, target: &Store) -> anyhow::Result<Option<String>> {
    if !dir.join("checkpoint-public.key").is_file() {
        return Ok(None);
    }
    let key = audit::load_public_key(&dir.join("checkpoint-public.key"))?;
    let report = audit::verify_log_dir(dir, &key, audit::VerifyOptions::default())
        .context("the access log does not verify; nothing of it was copied")?;
    anyhow::ensure!(
        target.log_len()? == 0,
        "the schema already holds an access log"
    );
    const CHUNK: usize = 4096;
    let mut chunk: Vec<Vec<u8>> = Vec::with_capacity(CHUNK);
    let mut copied = 0u64;
    let mut failed: Option<anyhow::Error> = None;
    let flush = |chunk: &mut Vec<Vec<u8>>, copied: &mut u64| -> anyhow::Result<()> {
        let n = chunk.len() as u64;
        let first = target.log_append(&mut |_| std::mem::take(chunk))?;
        anyhow::ensure!(
            first == *copied,
            "the shared log took entries at {first}, expected {copied}: another broker is writing"
        );
        *copied += n;
        Ok(())
    };
    audit::for_each_record(dir, |_, bytes| {
        if failed.is_some() {
            return;
        }
        chunk.push(bytes.to_vec());
        if chunk.len() == CHUNK {
            if let Err(e) = flush(&mut chunk, &mut copied) {
                failed = Some(e);
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if !chunk.is_empty() {
        flush(&mut chunk, &mut copied)?;
    }
    let notes = audit::checkpoint_notes(dir)?;
    for note in &notes {
        let checkpoint = audit::SignedCheckpoint::open(note, &key)?;
        target.log_put_checkpoint(checkpoint.size, note)?;
    }
    // Read back from the database: the same records, the same root.
    let mut tree = audit::MerkleTree::new();
    loop {
        let entries = target.log_read(tree.size(), CHUNK)?;
        if entries.is_empty() {
            break;
        }
        for entry in entries {
            tree.push(audit::hash_leaf(&entry));
        }
    }
    anyhow::ensure!(
        tree.size() == report.records && tree.root() == report.root,
        "the access log read back from the database is not the one copied ({} of {} records)",
        tree.size(),
        report.records
    );
    Ok(Some(format!(
        "access log: {} records and {} checkpoints copied; root {} recomputed from the database",
        report.records,
        notes.len(),
        hex::encode(report.root)
    )))
}

pub fn restore(from: &Path, data_dir: &Path) -> anyhow::Result<ExitCode> {
    // Every file is read twice: once to check its digest, once to copy it.
    let bar = Bar::start("restore (check, then copy)", Unit::Bytes);
    let manifest = vault::backup::restore_with_progress(from, data_dir, &bar);
    drop(bar);
    let manifest = manifest?;
    println!(
        "restored {} files from the backup of {} into {}; start the broker with the same master key",
        manifest.files.len(),
        manifest.created_at,
        data_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
