//! The effective configuration: the TOML file (optional) plus `SAFEGRID_…` environment
//! overrides, checked as a whole (`safegrid config check`, and at every start).
//!
//! Guarantees:
//! - An environment override replaces exactly one documented key ([`OVERRIDES`]); its value is
//!   typed like the key (number, boolean, comma-separated list) and a bad value is an error
//!   naming both the variable and the key.
//! - [`check`] reports every problem it finds (syntax, unknown key, bad value, unreadable
//!   file), each naming its key; messages name files and keys, never a file's content or a
//!   secret's value (the master key is reported only as present or missing).

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};

/// How an override's text becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Integer,
    Boolean,
    List,
}

/// Environment variable -> configuration key.
pub const OVERRIDES: &[(&str, &str)] = &[
    ("SAFEGRID_LISTEN", "listen"),
    ("SAFEGRID_TLS_CERT_FILE", "tls.cert_file"),
    ("SAFEGRID_TLS_KEY_FILE", "tls.key_file"),
    ("SAFEGRID_AUTH_JWKS_FILE", "auth.jwks_file"),
    ("SAFEGRID_AUTH_ISSUER", "auth.issuer"),
    ("SAFEGRID_AUTH_AUDIENCE", "auth.audience"),
    ("SAFEGRID_AUTH_JWKS_URL", "auth.jwks_url"),
    ("SAFEGRID_AUTH_DISCOVERY", "auth.discovery"),
    ("SAFEGRID_AUTH_CA_FILE", "auth.ca_file"),
    (
        "SAFEGRID_AUTH_JWKS_REFRESH_SECONDS",
        "auth.jwks_refresh_seconds",
    ),
    ("SAFEGRID_AUTH_LEEWAY_SECONDS", "auth.leeway_seconds"),
    ("SAFEGRID_AUTH_ROLES_CLAIM", "auth.roles_claim"),
    (
        "SAFEGRID_AUTH_JURISDICTION_CLAIM",
        "auth.jurisdiction_claim",
    ),
    ("SAFEGRID_AUTH_DEPT_CLAIM", "auth.dept_claim"),
    ("SAFEGRID_AUTH_NAME_CLAIM", "auth.name_claim"),
    ("SAFEGRID_INGEST_MAX_BODY_BYTES", "ingest.max_body_bytes"),
    ("SAFEGRID_STORE_CACHE_MB", "store.cache_mb"),
    ("SAFEGRID_STORE_BACKEND", "store.backend"),
    ("SAFEGRID_STORE_URL", "store.url"),
    ("SAFEGRID_STORE_SCHEMA", "store.schema"),
    ("SAFEGRID_STORE_MAX_CONNECTIONS", "store.max_connections"),
    ("SAFEGRID_PURPOSES", "purposes"),
    ("SAFEGRID_POLICY_DIR", "policy_dir"),
    ("SAFEGRID_MAPPINGS_DIR", "mappings_dir"),
    ("SAFEGRID_CONNECTORS_DIR", "connectors_dir"),
    ("SAFEGRID_BACKUP_DIR", "backup_dir"),
    ("SAFEGRID_AUDIT_ORIGIN", "audit.origin"),
    (
        "SAFEGRID_AUDIT_CHECKPOINT_SECONDS",
        "audit.checkpoint_seconds",
    ),
    ("SAFEGRID_BREAK_GLASS_PER_HOUR", "break_glass_per_hour"),
    ("SAFEGRID_MTLS_LISTEN", "mtls.listen"),
    ("SAFEGRID_MTLS_CLIENT_CA_FILE", "mtls.client_ca_file"),
    ("SAFEGRID_MTLS_CRL_FILES", "mtls.crl_files"),
    (
        "SAFEGRID_MTLS_REQUIRE_FOR_INGEST",
        "mtls.require_for_ingest",
    ),
    ("SAFEGRID_MTLS_RELOAD_SECONDS", "mtls.reload_seconds"),
    ("SAFEGRID_METRICS_LISTEN", "metrics_listen"),
    ("SAFEGRID_LIMITS_RATE_PER_SECOND", "limits.rate_per_second"),
    ("SAFEGRID_LIMITS_RATE_BURST", "limits.rate_burst"),
    ("SAFEGRID_LIMITS_MAX_CONNECTIONS", "limits.max_connections"),
    ("SAFEGRID_AUDIT_MIN_FREE_MB", "audit.min_free_mb"),
    ("SAFEGRID_EXCHANGE_CA_FILE", "exchange.ca_file"),
    (
        "SAFEGRID_EXCHANGE_RETRY_FOR_SECONDS",
        "exchange.retry_for_seconds",
    ),
    (
        "SAFEGRID_EXCHANGE_MAX_BACKOFF_SECONDS",
        "exchange.max_backoff_seconds",
    ),
];

fn kind_of(key: &str) -> Kind {
    match key {
        "ingest.max_body_bytes"
        | "store.cache_mb"
        | "store.max_connections"
        | "audit.checkpoint_seconds"
        | "break_glass_per_hour"
        | "mtls.reload_seconds"
        | "limits.rate_per_second"
        | "limits.rate_burst"
        | "limits.max_connections"
        | "audit.min_free_mb"
        | "exchange.retry_for_seconds"
        | "exchange.max_backoff_seconds"
        | "auth.jwks_refresh_seconds"
        | "auth.leeway_seconds" => Kind::Integer,
        "mtls.require_for_ingest" | "auth.discovery" => Kind::Boolean,
        "purposes" | "mtls.crl_files" => Kind::List,
        _ => Kind::Text,
    }
}

/// Loads the file (if any), applies overrides from `env`, deserializes and validates.
pub fn load_with(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let origin = path.map_or_else(|| "(no file)".to_owned(), |p| p.display().to_string());
    let mut table = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: origin.clone(),
                reason: e.to_string(),
            })?;
            toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::File {
                path: origin.clone(),
                reason: e.message().to_owned(),
            })?
        }
        None => toml::Table::new(),
    };
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    env.sort();
    for (variable, value) in env {
        let Some((_, key)) = OVERRIDES.iter().find(|(v, _)| *v == variable) else {
            continue;
        };
        let invalid = |reason: String| ConfigError::Invalid {
            key: format!("{key} (from {variable})"),
            reason,
        };
        let value = match kind_of(key) {
            Kind::Text => toml::Value::String(value),
            Kind::Integer => value
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| invalid("expected a whole number".to_owned()))?,
            Kind::Boolean => match value.trim() {
                "true" | "1" | "yes" => toml::Value::Boolean(true),
                "false" | "0" | "no" => toml::Value::Boolean(false),
                _ => return Err(invalid("expected true or false".to_owned())),
            },
            Kind::List => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            ),
        };
        set(&mut table, key, value).map_err(invalid)?;
    }
    let config: Config = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::File {
            path: origin,
            reason: e.message().to_owned(),
        })?;
    config.validate()?;
    Ok(config)
}

/// Loads the effective configuration from `path` and the process environment.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    load_with(path, std::env::vars())
}

fn set(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    match key.split_once('.') {
        None => {
            table.insert(key.to_owned(), value);
            Ok(())
        }
        Some((section, rest)) => {
            let entry = table
                .entry(section.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => set(inner, rest, value),
                _ => Err(format!("[{section}] in the file is not a table")),
            }
        }
    }
}

/// Every problem with the effective configuration, each naming its key. Empty means OK.
pub fn check(path: Option<&Path>, master_key: Option<&Path>) -> Vec<String> {
    let config = match load(path) {
        Ok(config) => config,
        Err(err) => return vec![err.to_string()],
    };
    let mut problems = Vec::new();
    let readable = |problems: &mut Vec<String>, key: &str, file: &Path| {
        if let Err(err) = std::fs::File::open(file) {
            problems.push(format!(
                "config key {key}: cannot read {}: {err}",
                file.display()
            ));
        }
    };
    match &config.tls {
        Some(tls) => {
            readable(&mut problems, "tls.cert_file", &tls.cert_file);
            readable(&mut problems, "tls.key_file", &tls.key_file);
        }
        None => problems.push("config key tls: missing (required unless serve --dev)".to_owned()),
    }
    match &config.auth {
        Some(auth) => {
            if let Some(file) = &auth.jwks_file {
                readable(&mut problems, "auth.jwks_file", file);
            }
            if let Some(file) = &auth.ca_file {
                readable(&mut problems, "auth.ca_file", file);
            }
        }
        None => problems.push("config key auth: missing (required unless serve --dev)".to_owned()),
    }
    if let Err(err) = config.user_words() {
        problems.push(err.to_string());
    }
    if let Some(mtls) = &config.mtls {
        readable(&mut problems, "mtls.client_ca_file", &mtls.client_ca_file);
        for crl in &mtls.crl_files {
            readable(&mut problems, "mtls.crl_files", crl);
        }
    }
    for (key, dir) in [
        ("policy_dir", &config.policy_dir),
        ("mappings_dir", &config.mappings_dir),
        ("connectors_dir", &config.connectors_dir),
        ("backup_dir", &config.backup_dir),
    ] {
        if let Some(dir) = dir {
            if !dir.is_dir() {
                problems.push(format!(
                    "config key {key}: {} is not a directory",
                    dir.display()
                ));
            }
        }
    }
    if let (Some(tls), true) = (&config.tls, problems.is_empty()) {
        let files = crate::tls::CertFiles {
            cert: tls.cert_file.clone(),
            key: tls.key_file.clone(),
        };
        if let Err(err) = crate::tls::server_config(&files) {
            problems.push(format!("config key tls: {err}"));
        }
        if let Some(mtls) = &config.mtls {
            let files = crate::tls::MtlsFiles {
                server: files,
                client_ca: mtls.client_ca_file.clone(),
                crls: mtls.crl_files.clone(),
            };
            if let Err(err) = crate::tls::mtls_server_config(&files) {
                problems.push(format!("config key mtls: {err}"));
            }
        }
    }
    let master_present = std::env::var_os(vault::crypto::MASTER_KEY_ENV).is_some()
        || master_key.is_some_and(|p| p.is_file());
    if !master_present {
        problems.push(format!(
            "master key: missing (pass --master-key FILE or set {})",
            vault::crypto::MASTER_KEY_ENV
        ));
    }
    problems
}

/// The configuration file named by `--config` or `SAFEGRID_CONFIG`.
pub fn config_path(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| std::env::var_os("SAFEGRID_CONFIG").map(PathBuf::from))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn overrides_replace_file_values_and_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:1\"\n[ingest]\nmax_body_bytes = 4096\n",
        )
        .unwrap();
        let config = load_with(
            Some(&path),
            env(&[
                ("SAFEGRID_LISTEN", "127.0.0.1:9"),
                ("SAFEGRID_PURPOSES", "emergency, elderly_care"),
                ("SAFEGRID_TLS_CERT_FILE", "/c.pem"),
                ("SAFEGRID_TLS_KEY_FILE", "/k.pem"),
                ("SAFEGRID_UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(config.purposes, vec!["emergency", "elderly_care"]);
        assert_eq!(config.ingest.max_body_bytes, 4096);
        assert_eq!(config.tls.unwrap().cert_file, PathBuf::from("/c.pem"));

        let err = load_with(
            Some(&path),
            env(&[("SAFEGRID_INGEST_MAX_BODY_BYTES", "lots")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("ingest.max_body_bytes") && err.contains("SAFEGRID_INGEST_MAX_BODY_BYTES"),
            "{err}"
        );
        let err = load_with(None, env(&[("SAFEGRID_INGEST_MAX_BODY_BYTES", "10")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ingest.max_body_bytes"), "{err}");

        let config = load_with(None, env(&[("SAFEGRID_STORE_CACHE_MB", "256")])).unwrap();
        assert_eq!(config.store.cache_mb, 256);
        let err = load_with(None, env(&[("SAFEGRID_STORE_CACHE_MB", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.cache_mb"), "{err}");

        // The PostgreSQL store: the URL from the environment, never printed; a backend
        // without its URL, a URL of another database and an odd schema name are refused.
        let url = "postgres://safegrid:pw-Secr3t@db.internal:5432/street";
        let config = load_with(
            None,
            env(&[
                ("SAFEGRID_STORE_BACKEND", "postgres"),
                ("SAFEGRID_STORE_URL", url),
                ("SAFEGRID_STORE_SCHEMA", "street_110105001"),
            ]),
        )
        .unwrap();
        let options = config.store.postgres().expect("postgres options");
        assert_eq!(options.url, url);
        assert_eq!(options.schema, "street_110105001");
        assert!(!format!("{config:?}").contains("pw-Secr3t"));
        let err = load_with(None, env(&[("SAFEGRID_STORE_BACKEND", "postgres")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.url"), "{err}");
        for (variable, value, key) in [
            ("SAFEGRID_STORE_URL", "mysql://u:p@h/db", "store.url"),
            ("SAFEGRID_STORE_SCHEMA", "Street; drop", "store.schema"),
            (
                "SAFEGRID_STORE_MAX_CONNECTIONS",
                "1",
                "store.max_connections",
            ),
        ] {
            let mut vars = vec![("SAFEGRID_STORE_BACKEND", "postgres"), (variable, value)];
            if variable != "SAFEGRID_STORE_URL" {
                vars.push(("SAFEGRID_STORE_URL", url));
            }
            let err = load_with(None, env(&vars)).unwrap_err().to_string();
            assert!(err.contains(key), "{variable}={value}: {err}");
            assert!(!err.contains("pw-Secr3t"), "{err}");
        }
        assert!(Config::default().store.postgres().is_none());
    }
}
