//! The `--config` file: TOML, one top-level key per option, named as the
//! option's id (`report_interval = "30s"`, `log_json = true`).
//!
//! A value is written as on the command line (a string, a number, or a
//! boolean for a switch); a list option (`tokens`) may also be an array of
//! strings. An unknown key, a table, or a value an option refuses is an
//! error naming the file, the line and the key.

use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction};
use toml::Spanned;

use super::ConfigError;

/// The settings a file holds, in file order.
#[derive(Debug)]
pub struct File {
    pub path: PathBuf,
    pub values: Vec<FileValue>,
}

#[derive(Debug)]
pub struct FileValue {
    pub key: String,
    /// The value as a command line would give it (`30s`, `1024`, `true`).
    pub raw: String,
    pub line: usize,
}

impl File {
    /// Reads and parses `path`; only its syntax is checked here.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("--config {}: cannot read it: {e}", path.display())))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let at = |offset: usize| path_line(path, text, offset);
        let table: std::collections::BTreeMap<Spanned<String>, Spanned<toml::Value>> = toml::from_str(text)
            .map_err(|e| {
            let place = e
                .span()
                .map(|s| at(s.start))
                .unwrap_or_else(|| path.display().to_string());
            ConfigError(format!("{place}: not valid TOML: {}", e.message().trim()))
        })?;
        let mut values = Vec::with_capacity(table.len());
        for (key, value) in table {
            let line = line_of(text, key.span().start);
            let raw = match value.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Datetime(d) => d.to_string(),
                toml::Value::Array(items) => {
                    let mut parts = Vec::with_capacity(items.len());
                    for item in items {
                        match item {
                            toml::Value::String(s) => parts.push(s.clone()),
                            _ => {
                                return Err(ConfigError(format!(
                                    "{}: {}: a list holds strings only",
                                    at(key.span().start),
                                    key.get_ref()
                                )));
                            }
                        }
                    }
                    parts.join(",")
                }
                toml::Value::Table(_) => {
                    return Err(ConfigError(format!(
                        "{}: {}: expected a value, found a table (every key is top-level)",
                        at(key.span().start),
                        key.get_ref()
                    )));
                }
            };
            values.push(FileValue {
                key: key.into_inner(),
                raw,
                line,
            });
        }
        values.sort_by_key(|v| v.line);
        Ok(Self {
            path: path.to_owned(),
            values,
        })
    }

    /// `path:line` of a value, for messages.
    pub fn place(&self, value: &FileValue) -> String {
        format!("{}:{}", self.path.display(), value.line)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn path_line(path: &Path, text: &str, offset: usize) -> String {
    format!("{}:{}", path.display(), line_of(text, offset))
}

/// Checks `raw` with the option's own parser, so a bad value in the file is
/// refused even where a flag or the environment overrides it. The message
/// echoes the value unless the option is a secret.
pub fn check_value(arg: &Arg, raw: &str) -> Result<(), String> {
    let shown = if arg.is_hide_env_values_set() {
        String::new()
    } else {
        format!(" {raw:?}")
    };
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        return match raw {
            "true" | "false" => Ok(()),
            _ => Err(format!("invalid value{shown}: expected true or false")),
        };
    }
    let long = arg.get_long().unwrap_or_default();
    // The option alone, without its environment variable or default.
    let probe = arg
        .clone()
        .env(None::<&'static str>)
        .default_value(None::<&'static str>)
        .required(false);
    clap::Command::new("file")
        .no_binary_name(true)
        .arg(probe)
        .try_get_matches_from([format!("--{long}={raw}")])
        .map(|_| ())
        .map_err(|e| {
            let reason = std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_else(|| e.kind().to_string());
            format!("invalid value{shown}: {reason}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<File, ConfigError> {
        File::parse(Path::new("tally.toml"), text)
    }

    #[test]
    fn values_are_read_as_a_command_line_gives_them() {
        let file = parse(
            "report_interval = \"250ms\"\nbatch_size = 10\nlog_json = true\n\
             tokens = [\"proxy=a\", \"agent=b\"]\n",
        )
        .unwrap();
        let got: Vec<(&str, &str, usize)> = file
            .values
            .iter()
            .map(|v| (v.key.as_str(), v.raw.as_str(), v.line))
            .collect();
        assert_eq!(
            got,
            [
                ("report_interval", "250ms", 1),
                ("batch_size", "10", 2),
                ("log_json", "true", 3),
                ("tokens", "proxy=a,agent=b", 4),
            ]
        );
    }

    #[test]
    fn syntax_tables_and_mixed_lists_are_refused_with_the_line() {
        for (text, needle) in [
            ("a = 1\nreport_interval = \n", "tally.toml:2: not valid TOML"),
            (
                "a = 1\n[serve]\nlisten = \"x\"\n",
                "tally.toml:2: serve: expected a value, found a table",
            ),
            (
                "tokens = [\"proxy=a\", 3]\n",
                "tally.toml:1: tokens: a list holds strings only",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
