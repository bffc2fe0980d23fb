//! `cargo xtask fuzz`: bounded libFuzzer runs of the payload decoders
//! (the cargo-fuzz project in `crates/app/fuzz`).
//!
//! New inputs go to a scratch corpus under `crates/app/fuzz/target/`, so a
//! run leaves the tree clean; `--save` merges what adds coverage into the
//! committed corpus and minimizes it.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// The fuzz targets, as in `crates/app/fuzz/Cargo.toml`.
pub const TARGETS: [&str; 4] = [
    "app_stats",
    "boundary_logs",
    "app_stats_structured",
    "boundary_logs_structured",
];

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Only this target (app_stats, boundary_logs, app_stats_structured,
    /// boundary_logs_structured).
    #[arg(long)]
    target: Option<String>,
    /// Seconds of fuzzing per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Sanitizer: address, or none where AddressSanitizer does not link.
    #[arg(long, default_value = "address")]
    sanitizer: String,
    /// Merge inputs that add coverage into the committed corpus, then
    /// minimize it (cargo fuzz cmin).
    #[arg(long)]
    save: bool,
}

pub fn run(args: FuzzArgs) -> anyhow::Result<()> {
    let targets: Vec<&str> = match args.target.as_deref() {
        None => TARGETS.to_vec(),
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!(
            "unknown fuzz target {t:?}: expected one of {}",
            TARGETS.join(", ")
        ),
    };
    ensure_cargo_fuzz()?;
    let app = crate::workspace_root().join("crates/app");
    let mut failed = Vec::new();
    for target in targets {
        let corpus = format!("fuzz/corpus/{target}");
        let scratch = format!("fuzz/target/corpus/{target}");
        let seeds = format!("fuzz/seeds/{target}");
        for dir in [&scratch, &corpus] {
            std::fs::create_dir_all(app.join(dir)).with_context(|| format!("creating {dir}"))?;
        }
        // The first directory receives new inputs; the others are read only.
        let mut dirs = vec![scratch.as_str(), corpus.as_str()];
        if app.join(&seeds).is_dir() {
            dirs.push(&seeds);
        }
        let time = format!("-max_total_time={}", args.seconds);
        let mut fuzz_args = build_args("run", &args.sanitizer);
        fuzz_args.push(target);
        fuzz_args.extend(&dirs);
        fuzz_args.extend([
            "--",
            &time,
            "-max_len=16384",
            "-timeout=10",
            "-print_final_stats=1",
        ]);
        eprintln!("xtask: fuzzing {target} for {} s", args.seconds);
        if let Err(e) = cargo_fuzz(&app, &fuzz_args) {
            eprintln!("xtask: {target}: {e:#} (inputs in crates/app/fuzz/artifacts/{target}/)");
            failed.push(target);
            continue;
        }
        if args.save {
            save(&app, target, &args.sanitizer, &dirs)?;
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Adds the inputs that bring new coverage to the committed corpus, then
/// minimizes it.
fn save(app: &Path, target: &str, sanitizer: &str, dirs: &[&str]) -> anyhow::Result<()> {
    let corpus = format!("fuzz/corpus/{target}");
    let mut merge = build_args("run", sanitizer);
    merge.push(target);
    merge.push(&corpus);
    merge.extend(dirs.iter().filter(|d| **d != corpus));
    merge.extend(["--", "-merge=1", "-max_len=16384"]);
    cargo_fuzz(app, &merge)?;
    // Edges only (no hit counts) and a set cover: a few hundred files per
    // target instead of thousands, every edge still reached.
    let mut cmin = build_args("cmin", sanitizer);
    cmin.extend([
        target,
        &corpus,
        "--",
        "-set_cover_merge=1",
        "-use_counters=0",
        "-max_len=16384",
    ]);
    cargo_fuzz(app, &cmin)
}

/// Release with debug assertions and overflow checks.
fn build_args<'a>(command: &'a str, sanitizer: &'a str) -> Vec<&'a str> {
    vec!["fuzz", command, "-O", "-a", "--sanitizer", sanitizer]
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let installed = Command::new(cargo())
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz");
    let status = Command::new(cargo())
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("running cargo install")?;
    if !status.success() {
        bail!("`cargo install cargo-fuzz --locked` failed with {status}");
    }
    Ok(())
}

/// cargo-fuzz needs nightly flags (`-Z sanitizer`, sancov passes);
/// RUSTC_BOOTSTRAP lets the stable toolchain take them.
fn cargo_fuzz(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(cargo())
        .args(args)
        .current_dir(dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .status()
        .context("could not start cargo fuzz")?;
    if !status.success() {
        bail!("`cargo {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `TARGETS` lists exactly the `[[bin]]` targets of the fuzz crate.
    #[test]
    fn targets_match_the_fuzz_manifest() {
        let manifest =
            std::fs::read_to_string(crate::workspace_root().join("crates/app/fuzz/Cargo.toml")).unwrap();
        let mut in_bin = false;
        let mut bins = Vec::new();
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin && let Some(name) = line.strip_prefix("name = ") {
                bins.push(name.trim_matches('"').to_owned());
            }
        }
        bins.sort();
        let mut targets: Vec<String> = TARGETS.iter().map(|t| (*t).to_owned()).collect();
        targets.sort();
        assert_eq!(bins, targets);
        for t in TARGETS {
            let source = format!("crates/app/fuzz/fuzz_targets/{t}.rs");
            assert!(
                crate::workspace_root().join(&source).is_file(),
                "{source} missing"
            );
        }
    }

    #[test]
    fn an_unknown_target_is_refused_before_anything_runs() {
        let args = FuzzArgs {
            target: Some("app-stats".into()),
            seconds: 1,
            sanitizer: "address".into(),
            save: false,
        };
        let e = run(args).unwrap_err().to_string();
        assert!(e.contains("unknown fuzz target \"app-stats\""), "{e}");
        assert!(e.contains("boundary_logs_structured"), "{e}");
    }
}
