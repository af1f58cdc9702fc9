//! The crate layout holds: every dependency edge between the workspace's crates is one the
//! architecture allows, and none of the edges it forbids exists (read from `cargo metadata`,
//! so a new `Cargo.toml` line that breaks the layout fails here).
//!
//! The rules (docs/ARCHITECTURE.md, "Crates"):
//! - each product crate depends only on the crates listed for it;
//! - no library crate but `broker` depends on a web server framework (axum, hyper, tower);
//! - only `broker` and, for its HTTPS client, `connectors` depend on TLS (rustls and kin);
//! - no product crate depends on `demo` (the demo, the benchmarks and the tests may);
//! - `vault` knows neither policies, search nor the engine;
//! - `policies` does no I/O: no runtime, file-system, network or database crate.
//!
//! Only normal and build dependencies count: a crate's tests and benchmarks may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Each product crate and the workspace crates it may depend on.
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("chinese-text", &[]),
    ("audit", &[]),
    ("connectors", &["model", "chinese-text"]),
    ("vault", &["model"]),
    ("policies", &["model", "chinese-text"]),
    ("engine", &["model", "chinese-text", "vault"]),
    (
        "search",
        &["model", "chinese-text", "vault", "policies", "engine"],
    ),
    (
        "broker",
        &[
            "model",
            "chinese-text",
            "connectors",
            "vault",
            "policies",
            "engine",
            "audit",
            "search",
        ],
    ),
    (
        "safegrid",
        &[
            "broker",
            "demo",
            "model",
            "chinese-text",
            "connectors",
            "vault",
            "policies",
            "engine",
            "audit",
            "search",
        ],
    ),
    ("demo", &["model", "chinese-text"]),
];

const WEB_FRAMEWORK: &[&str] = &[
    "axum",
    "axum-core",
    "hyper",
    "hyper-util",
    "tower",
    "tower-http",
];
const TLS: &[&str] = &[
    "rustls",
    "tokio-rustls",
    "rustls-pemfile",
    "rustls-pki-types",
    "rcgen",
];
/// Crates that would let `policies` touch the outside world.
const IO: &[&str] = &[
    "tokio",
    "redb",
    "reqwest",
    "sqlx",
    "tantivy",
    "hyper",
    "axum",
    "tracing-subscriber",
];

/// Normal and build dependencies of every workspace crate, by crate name.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&workspace)
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let mut out = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_owned();
        let deps = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null() || d["kind"] == "build")
            .map(|d| d["name"].as_str().expect("dependency name").to_owned())
            .collect();
        out.insert(name, deps);
    }
    out
}

fn workspace_crates(all: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    all.keys().cloned().collect()
}

#[test]
fn every_product_crate_depends_only_on_what_the_layout_allows() {
    let all = dependencies();
    let ours = workspace_crates(&all);
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (name, deps) in &all {
        if name == "e2e-tests" {
            continue;
        }
        let Some(may) = allowed.get(name.as_str()) else {
            wrong.push(format!(
                "{name} is not in the layout (add it to ARCHITECTURE.md and here)"
            ));
            continue;
        };
        for dep in deps.iter().filter(|d| ours.contains(*d)) {
            if !may.contains(&dep.as_str()) {
                wrong.push(format!("{name} -> {dep}"));
            }
        }
    }
    assert!(wrong.is_empty(), "edges the layout forbids: {wrong:?}");
}

#[test]
fn the_forbidden_edges_do_not_exist() {
    let all = dependencies();
    let mut wrong = Vec::new();
    for (name, deps) in &all {
        let library = !matches!(name.as_str(), "broker" | "safegrid" | "e2e-tests");
        for dep in deps {
            if library && WEB_FRAMEWORK.contains(&dep.as_str()) {
                wrong.push(format!("{name} -> {dep} (web framework outside broker)"));
            }
            if library && name != "connectors" && TLS.contains(&dep.as_str()) {
                wrong.push(format!(
                    "{name} -> {dep} (TLS outside broker and connectors)"
                ));
            }
            if name != "safegrid" && name != "e2e-tests" && dep == "demo" {
                wrong.push(format!("{name} -> demo (the demo under a product crate)"));
            }
        }
    }
    for dep in &all["vault"] {
        if ["policies", "search", "engine"].contains(&dep.as_str()) {
            wrong.push(format!("vault -> {dep}"));
        }
    }
    for dep in &all["policies"] {
        if IO.contains(&dep.as_str()) {
            wrong.push(format!("policies -> {dep} (I/O in policies)"));
        }
    }
    assert!(wrong.is_empty(), "forbidden edges: {wrong:?}");
}

#[test]
fn the_layout_names_every_crate_and_the_checks_see_the_dependencies() {
    let all = dependencies();
    // The test would pass vacuously if metadata lost the edges: the known ones are there.
    assert!(all["broker"].contains("axum"));
    assert!(all["engine"].contains("vault"));
    assert!(all["safegrid"].contains("demo"));
    for (name, _) in ALLOWED {
        assert!(
            all.contains_key(*name),
            "{name} is in the layout but not in the workspace"
        );
    }
}
