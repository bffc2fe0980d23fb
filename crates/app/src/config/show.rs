//! `tally config`: the effective configuration as a TOML file, each line
//! saying where its value came from. Secrets are shown only redacted, on
//! commented lines, so the output can be saved as a `--config` file as is.

use std::fmt::Write as _;

use super::layers::{Effective, Setting};
use super::{Tokens, redact_database_url};

/// The text `tally config` prints.
pub fn render(effective: &Effective) -> String {
    let mut out = String::new();
    let file = effective
        .file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "no --config given".to_owned());
    let _ = writeln!(
        out,
        "# tally {} configuration: a flag beats its TALLY_ variable, which beats\n\
         # the file ({file}), which beats the default.",
        serve_name(&effective.command)
    );
    let lines: Vec<(String, Option<String>)> = effective.settings.iter().map(line).collect();
    let width = lines
        .iter()
        .filter(|(_, origin)| origin.is_some())
        .map(|(l, _)| l.len())
        .max()
        .unwrap_or(0)
        .min(40);
    for (text, origin) in lines {
        let _ = match origin {
            Some(origin) => writeln!(out, "{text:<width$}  # {origin}"),
            None => writeln!(out, "{text}"),
        };
    }
    if !effective.ignored_env.is_empty() {
        let _ = writeln!(
            out,
            "# Not tally settings, ignored: {}",
            effective.ignored_env.join(", ")
        );
    }
    out
}

/// `tally config` shows what `serve` would run with.
fn serve_name(command: &str) -> &str {
    if command == "config" { "serve" } else { command }
}

/// A setting's line and, unless it is unset, where its value came from.
fn line(setting: &Setting) -> (String, Option<String>) {
    let key = &setting.key;
    let origin = setting.origin.to_string();
    let Some(raw) = &setting.raw else {
        return (format!("# {key} is not set"), None);
    };
    if setting.secret {
        return (
            format!("# {key} = {}", redacted(key, raw)),
            Some(format!("{origin}, redacted")),
        );
    }
    let value = if setting.switch || (!raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit())) {
        raw.clone()
    } else {
        toml::Value::String(raw.clone()).to_string()
    };
    (format!("{key} = {value}"), Some(origin))
}

/// What a secret may show: a database URL without its password and query,
/// the subjects of the tokens; nothing of any other.
fn redacted(key: &str, raw: &str) -> String {
    match key {
        "database_url" => format!("\"{}\"", redact_database_url(raw)),
        "tokens" => match Tokens::parse(raw) {
            Ok(tokens) => format!("<{} tokens: {}>", tokens.len(), tokens.describe().join(", ")),
            Err(_) => "<invalid>".to_owned(),
        },
        _ => "<redacted>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::layers::Origin;

    fn setting(key: &str, raw: Option<&str>, origin: Origin, secret: bool) -> Setting {
        Setting {
            key: key.to_owned(),
            raw: raw.map(str::to_owned),
            origin,
            secret,
            switch: key == "log_json",
        }
    }

    #[test]
    fn secrets_are_redacted_and_commented_out() {
        let effective = Effective {
            command: "config".to_owned(),
            file: Some("tally.toml".into()),
            settings: vec![
                setting("listen", Some("127.0.0.1:8080"), Origin::Default, false),
                setting(
                    "database_url",
                    Some("postgres://u:hunter2@db:5432/tally?password=x"),
                    Origin::Env("TALLY_DATABASE_URL".into()),
                    true,
                ),
                setting(
                    "tokens",
                    Some("proxy=hunter2,admin=hunter3"),
                    Origin::File("tally.toml:3".into()),
                    true,
                ),
                setting(
                    "batch_size",
                    Some("64"),
                    Origin::Flag("--batch-size".into()),
                    false,
                ),
                setting(
                    "log_json",
                    Some("true"),
                    Origin::File("tally.toml:4".into()),
                    false,
                ),
                setting("replica_id", None, Origin::Unset, false),
            ],
            ignored_env: vec!["TALLY_SERVICE_HOST".into()],
        };
        let text = render(&effective);
        assert!(!text.contains("hunter"), "{text}");
        for needle in [
            "tally serve configuration",
            "the file (tally.toml)",
            "listen = \"127.0.0.1:8080\"  ",
            "# default",
            "# database_url = \"postgres://db:5432/tally\"",
            "# env TALLY_DATABASE_URL, redacted",
            "# tokens = <2 tokens: workspace-proxy, user:admin>",
            "batch_size = 64",
            "# flag --batch-size",
            "log_json = true",
            "# file tally.toml:4",
            "# replica_id is not set",
            "ignored: TALLY_SERVICE_HOST",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
        // What is not commented out is a valid configuration file.
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table.len(), 3, "{table:?}");
    }
}
