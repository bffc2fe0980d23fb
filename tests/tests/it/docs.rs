//! The repository explains itself: every link to a rule in docs/rules.md
//! names a heading there, and nothing cites a document or an issue number a
//! reader of the repository cannot see.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Text files of the repository: sources, manifests, docs, CI scripts.
fn text_files() -> Vec<(PathBuf, String)> {
    const SKIP: [&str; 6] = [
        "target",
        ".git",
        "corpus",
        "artifacts",
        "node_modules",
        "proptest-regressions",
    ];
    const TEXT: [&str; 8] = ["rs", "md", "toml", "sql", "sh", "py", "go", "yml"];
    let mut out = Vec::new();
    let mut dirs = vec![root()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !SKIP.contains(&name.as_str()) {
                    dirs.push(path);
                }
                continue;
            }
            let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
            let is_text = ext.as_deref().is_some_and(|e| TEXT.contains(&e)) || name == "run";
            if is_text && let Ok(text) = std::fs::read_to_string(&path) {
                out.push((path, text));
            }
        }
    }
    assert!(
        out.len() > 50,
        "found only {} files under {}",
        out.len(),
        root().display()
    );
    out
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces
/// as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn rule_anchors() -> BTreeSet<String> {
    let rules = std::fs::read_to_string(root().join("docs/rules.md")).unwrap();
    rules
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

/// The anchors after each `marker` in `text`.
fn links_in<'a>(text: &'a str, marker: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    text.match_indices(marker).map(move |(at, _)| {
        let rest = &text[at + marker.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(rest.len());
        &rest[..end]
    })
}

#[test]
fn every_link_to_a_rule_names_a_heading_of_docs_rules() {
    let anchors = rule_anchors();
    assert!(anchors.contains("rollup"), "{anchors:?}");
    let mut broken = Vec::new();
    let mut links = 0;
    for (path, text) in text_files() {
        if path.ends_with(file!().trim_start_matches("tests/")) {
            continue; // its own markers are no links
        }
        let own_page = path.ends_with("docs/rules.md");
        let marker = if own_page { "](#" } else { "rules.md#" };
        for anchor in links_in(&text, marker) {
            links += 1;
            if !anchors.contains(anchor) {
                broken.push(format!("{}: #{anchor}", path.display()));
            }
        }
    }
    assert!(links > 10, "only {links} links to rules found");
    assert!(
        broken.is_empty(),
        "links to no heading of docs/rules.md (headings: {anchors:?}):\n{}",
        broken.join("\n")
    );
}

#[test]
fn nothing_cites_the_outside_specification_or_issue_numbers() {
    // Built from parts so that this file does not match itself.
    let spec = ["SP", "EC"].concat();
    let seed_bug = ["seed", " bug"].concat();
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut found = Vec::new();
    for (path, text) in text_files() {
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            let issue_number = lower
                .match_indices("issue ")
                .any(|(at, _)| lower[at + "issue ".len()..].starts_with(|c: char| c.is_ascii_digit()));
            let spec_word = line.match_indices(&spec).any(|(at, _)| {
                !word(line[..at].chars().next_back()) && !word(line[at + spec.len()..].chars().next())
            });
            if spec_word || issue_number || lower.contains(&seed_bug) {
                found.push(format!("{}:{}: {line}", path.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "state the rule in docs/rules.md and link its heading instead:\n{}",
        found.join("\n")
    );
}
