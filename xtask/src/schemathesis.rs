//! `cargo xtask schemathesis`: schemathesis (from PyPI), a tool written
//! elsewhere, against a live `tally serve` built from this tree, on the
//! in-memory store or on a throwaway PostgreSQL.
//!
//! schemathesis generates requests from the server's own OpenAPI document
//! and runs all its checks (no 5xx, every response as documented, auth
//! enforced, schema-valid data accepted and invalid data refused, 405 for
//! undocumented methods); `schemathesis/hooks.py` adds a check that every
//! call is refused without a token and with every wrong role's token, and
//! writes every request it sends, with its status, to a ledger. Then this
//! task audits the store against the ledger (see [`audit`]): nothing a
//! refused request carried is stored, and everything an accepted one
//! carried is.

mod audit;
mod ledger;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::server::Server;

/// The version CI installs (`.ci/run`), and the one this task was tested with.
pub const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// One token per role of `--tokens`; the proxy's names its proxy id, as
/// Coder prints it.
const TOKENS: [(&str, &str); 5] = [
    ("proxy", "5b0e5a2c-1f44-4c3f-9a57-0d7b1e2a9c11:st-proxy"),
    ("agent", "st-agent"),
    ("reader", "st-reader"),
    ("admin", "st-admin"),
    ("member", "st-member"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Memory,
    Postgres,
}

#[derive(Debug, clap::Args)]
pub struct SchemathesisArgs {
    /// The store behind the server.
    #[arg(long, value_enum, default_value_t = StoreKind::Memory)]
    store: StoreKind,
    /// Examples per operation in each generating phase (schemathesis'
    /// `--max-examples`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    examples: u32,
    /// schemathesis' seed, to repeat a run.
    #[arg(long)]
    seed: Option<String>,
    /// Use the existing target/debug/tally instead of building it first.
    #[arg(long)]
    no_build: bool,
}

pub fn run(args: SchemathesisArgs) -> anyhow::Result<()> {
    let version = schemathesis_version()?;
    let root = crate::workspace_root();
    if !args.no_build {
        crate::cargo(&["build", "-p", "tally", "--bin", "tally"])?;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let binary = target.join("debug").join("tally");
    if !binary.is_file() {
        bail!("{} does not exist: build it or drop --no-build", binary.display());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let database = match args.store {
        StoreKind::Memory => None,
        StoreKind::Postgres => Some(rt.block_on(tally_tests::pg::try_fresh_database())?),
    };
    let database_url = database.as_ref().map(|db| db.url.as_str());
    let tokens = TOKENS
        .iter()
        .map(|(role, token)| format!("{role}={token}"))
        .collect::<Vec<_>>()
        .join(",");
    let serve_args: Vec<String> = [
        "--tokens",
        &tokens,
        // Short intervals, so the audit sees the store soon after the run.
        "--report-interval",
        "1s",
        "--tracker-flush-interval",
        "1s",
    ]
    .map(str::to_owned)
    .into();
    let mut server = Server::start(&binary, database_url, &serve_args)?;
    let base = format!("http://{}", server.addr);
    let store = match args.store {
        StoreKind::Memory => "memory",
        StoreKind::Postgres => "postgres",
    };
    // Kept after the run, to look into a finding.
    let work = target.join("schemathesis").join(store);
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let ledger_path = work.join("ledger.jsonl");

    let config = serde_json::json!({
        "tokens": TOKENS.iter().map(|(r, t)| (r.to_string(), serde_json::json!(t))).collect::<serde_json::Map<_, _>>(),
        "ledger": ledger_path,
    });
    let mut st = Command::new("st");
    st.args(["run", &format!("{base}/api/v2/openapi.json"), "--checks", "all"])
        .args(["--max-examples", &args.examples.to_string()])
        .env("PYTHONPATH", root.join("xtask/schemathesis"))
        .env("SCHEMATHESIS_HOOKS", "hooks")
        // Its cache (`.schemathesis/`) goes there, not into the tree.
        .current_dir(&work)
        .env("TALLY_ST_CONFIG", config.to_string())
        // Never ask a question or phone home.
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .stdin(std::process::Stdio::null());
    if let Some(seed) = &args.seed {
        st.args(["--seed", seed]);
    }
    println!(
        "schemathesis {version} against tally at {base} ({store} store), --max-examples {}",
        args.examples
    );
    let started = Instant::now();
    let st_status = st.status().context("could not start `st`")?;
    let st_seconds = started.elapsed().as_secs_f64();

    let ledger = ledger::Ledger::read(&ledger_path)?;
    println!("{} (in {})", ledger.summary(), ledger_path.display());
    let mut findings = rt.block_on(audit::live(&base, &ledger, TOKENS[2].1))?;
    let exit = server.stop()?;
    if !exit.success() {
        findings.push(format!("tally serve exited with {exit} after SIGTERM"));
    }
    if server.bad_lines() > 0 {
        println!(
            "tally logged {} WARN/ERROR lines, the first: {:#?}",
            server.bad_lines(),
            server.last_bad_lines()
        );
    }
    if let Some(url) = database_url {
        findings.extend(rt.block_on(audit::postgres(url, &ledger))?);
    }
    println!(
        "schemathesis {version}: {} in {st_seconds:.0} s; store audit: {}",
        if st_status.success() {
            "no failures".to_owned()
        } else {
            format!("failed ({st_status})")
        },
        if findings.is_empty() {
            "nothing refused was stored, everything accepted was".to_owned()
        } else {
            format!("{} findings", findings.len())
        }
    );
    for finding in &findings {
        println!("  audit: {finding}");
    }
    if !st_status.success() || !findings.is_empty() {
        bail!("the schemathesis run found failures (see above)");
    }
    Ok(())
}

/// `st --version`; a missing schemathesis is an error, never a skip.
fn schemathesis_version() -> anyhow::Result<String> {
    let output = Command::new("st").arg("--version").output().with_context(|| {
        format!("schemathesis is not installed: `pip install schemathesis=={SCHEMATHESIS_VERSION}`")
    })?;
    if !output.status.success() {
        bail!(
            "`st --version` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.rsplit(' ').next().unwrap_or_default().trim().to_owned();
    if version != SCHEMATHESIS_VERSION {
        println!("note: schemathesis {version}, not the {SCHEMATHESIS_VERSION} CI installs");
    }
    Ok(version)
}
