//! Where each setting comes from: a flag, else its `TALLY_` environment
//! variable, else the `--config` file, else its default.
//!
//! clap already ranks flags over environment variables over defaults, and
//! holds every option's parser (`cli.rs`). The file slots in by standing in
//! for the defaults: each value it holds becomes its option's default for
//! this run, after the option's own parser has checked it. So an option is
//! declared once, with clap, and is a file key and a line of `tally config`
//! with no more code.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::StyledStr;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, CommandFactory as _, FromArgMatches as _};

use super::ConfigError;
use super::file::{File, check_value};
use crate::cli::Cli;

/// The commands that read the configuration (flags, environment, file).
const CONFIGURED: &[&str] = &["serve", "migrate", "config"];
/// Read by the log set-up, not by clap.
const OTHER_VARIABLES: &[&str] = &["TALLY_LOG"];

/// A parsed command line and where its settings came from.
#[derive(Debug)]
pub struct Loaded {
    pub cli: Cli,
    pub effective: Effective,
}

#[derive(Debug)]
pub enum LoadError {
    /// clap's own answer: a usage error (exit 2), or `--help`/`--version`.
    Usage(clap::Error),
    /// A bad file, or a near miss of a variable name (exit 2).
    Config(ConfigError),
}

impl From<ConfigError> for LoadError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// The settings of the command being run, each with where it came from.
#[derive(Debug, Default)]
pub struct Effective {
    pub command: String,
    pub file: Option<PathBuf>,
    pub settings: Vec<Setting>,
    /// `TALLY_` variables that are no setting of tally (Kubernetes service
    /// links, developer tools' own): left alone.
    pub ignored_env: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The option's id: its key in the file.
    pub key: String,
    /// As given (`30s`), or `None` when unset.
    pub raw: Option<String>,
    pub origin: Origin,
    /// Never shown (`hide_env_values` options).
    pub secret: bool,
    /// A switch (`--log-json`) or a boolean option (`--access-log`): its
    /// value is `true` or `false`.
    pub switch: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(String),
    Env(String),
    File(String),
    Default,
    Unset,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag(flag) => write!(f, "flag {flag}"),
            Self::Env(name) => write!(f, "env {name}"),
            Self::File(place) => write!(f, "file {place}"),
            Self::Default => f.write_str("default"),
            Self::Unset => f.write_str("unset"),
        }
    }
}

/// Parses `args` (the program name first) and applies the `--config` file.
pub fn load(args: Vec<OsString>) -> Result<Loaded, LoadError> {
    let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
    load_from(args, names)
}

/// [`load`] with the names of the environment's variables given. clap reads
/// the values from the process environment itself.
fn load_from(args: Vec<OsString>, env_names: impl Iterator<Item = String>) -> Result<Loaded, LoadError> {
    let mut command = Cli::command();
    // A first pass finds the command and its file; what the file may supply
    // is not required yet.
    let relaxed = command
        .clone()
        .mut_subcommands(|sub| sub.mut_args(|arg| arg.required(false)));
    let first = parse(relaxed, &args)?;
    let name = first.subcommand_name().unwrap_or_default().to_owned();
    if !CONFIGURED.contains(&name.as_str()) {
        return Ok(Loaded {
            cli: Cli::from_arg_matches(&parse(command, &args)?).map_err(LoadError::Usage)?,
            effective: Effective {
                command: name,
                ..Effective::default()
            },
        });
    }
    let ignored_env = check_environment(&command, env_names)?;
    let path = first
        .subcommand_matches(&name)
        .and_then(|sub| sub.get_one::<PathBuf>("config"))
        .cloned();
    let mut places = std::collections::BTreeMap::new();
    if let Some(path) = &path {
        let file = File::read(path)?;
        let (applied, sub_command) = apply_file(&command, &name, &file)?;
        command = command.mut_subcommand(&name, |_| sub_command);
        places.extend(applied);
    }
    let matches = parse(command.clone(), &args)?;
    let settings = match (command.find_subcommand(&name), matches.subcommand_matches(&name)) {
        (Some(sub_command), Some(sub)) => settings_of(sub_command, sub, &places),
        _ => Vec::new(),
    };
    Ok(Loaded {
        cli: Cli::from_arg_matches(&matches).map_err(LoadError::Usage)?,
        effective: Effective {
            command: name,
            file: path,
            settings,
            ignored_env,
        },
    })
}

/// clap's parse, with a bad value from the environment saying so.
fn parse(command: Command, args: &[OsString]) -> Result<ArgMatches, LoadError> {
    command.try_get_matches_from(args).map_err(|mut e| {
        if matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation)
            && let Some(name) = env_source(&e, args)
        {
            e.insert(
                ContextKind::Suggested,
                ContextValue::StyledStrs(vec![StyledStr::from(format!(
                    "the value comes from the environment variable {name}"
                ))]),
            );
        }
        LoadError::Usage(e)
    })
}

/// The variable a refused value came from, when the flag was not given.
fn env_source(e: &clap::Error, args: &[OsString]) -> Option<String> {
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.split_whitespace().next()?.to_owned();
    let given = args.iter().any(|a| {
        let a = a.to_string_lossy();
        a == long || a.starts_with(&format!("{long}="))
    });
    if given {
        return None;
    }
    let id = long.trim_start_matches('-').replace('-', "_");
    let name = format!("TALLY_{}", id.to_ascii_uppercase());
    std::env::var_os(&name).map(|_| name)
}

/// Checks every key of `file` and makes each value of `command`'s own
/// options that option's default. Keys of another configured command's
/// options are skipped (serve's in `migrate`). Returns the keys applied with
/// their `path:line`, and the changed subcommand.
fn apply_file(
    root: &Command,
    command: &str,
    file: &File,
) -> Result<(Vec<(String, String)>, Command), ConfigError> {
    let sub = root
        .find_subcommand(command)
        .cloned()
        .ok_or_else(|| ConfigError(format!("no command {command}")))?;
    let known = file_keys(root);
    let mut applied = Vec::new();
    for value in &file.values {
        let place = file.place(value);
        let key = value.key.as_str();
        if key == "config" {
            return Err(ConfigError(format!(
                "{place}: config: a configuration file cannot name another one"
            )));
        }
        let Some(arg) = known.iter().find(|a| a.get_id() == key) else {
            let hint = nearest(key, known.iter().map(|a| a.get_id().as_str()))
                .map(|k| format!(" (did you mean {k}?)"))
                .unwrap_or_default();
            return Err(ConfigError(format!(
                "{place}: unknown key {key}{hint}; the keys are the options of `tally serve --help`, with _ for -"
            )));
        };
        check_value(arg, &value.raw).map_err(|reason| ConfigError(format!("{place}: {key}: {reason}")))?;
        if sub.get_arguments().all(|a| a.get_id() != key) {
            continue;
        }
        applied.push((key.to_owned(), place));
    }
    // In place, so `--help` keeps the options' order.
    let defaults: std::collections::BTreeMap<&str, &str> = file
        .values
        .iter()
        .map(|v| (v.key.as_str(), v.raw.as_str()))
        .collect();
    let sub = sub.mut_args(|arg| match defaults.get(arg.get_id().as_str()) {
        Some(raw) => arg.default_value((*raw).to_owned()).required(false),
        None => arg,
    });
    Ok((applied, sub))
}

/// The options a file may set: those of the configured commands.
fn file_keys(root: &Command) -> Vec<clap::Arg> {
    let mut args: Vec<clap::Arg> = Vec::new();
    for name in CONFIGURED {
        if let Some(sub) = root.find_subcommand(name) {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if !matches!(id, "help" | "version" | "config")
                    && !crate::cli::COMMAND_LINE_ONLY.contains(&id)
                    && args.iter().all(|a| a.get_id() != id)
                {
                    args.push(arg.clone());
                }
            }
        }
    }
    args
}

/// The known name closest to `name`, if it is close enough to be a typo.
fn nearest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// A `TALLY_` variable one or two edits from a setting's name is taken for a
/// misspelling of it: a clear error rather than a setting silently ignored.
/// Others are left alone (a Kubernetes service named tally sets
/// `TALLY_SERVICE_HOST`, `TALLY_PORT`, ...) and returned for `tally config`.
fn check_environment(
    root: &Command,
    names: impl Iterator<Item = String>,
) -> Result<Vec<String>, ConfigError> {
    let mut known: BTreeSet<String> = OTHER_VARIABLES.iter().map(|s| (*s).to_owned()).collect();
    for sub in root.get_subcommands() {
        for arg in sub.get_arguments() {
            if let Some(env) = arg.get_env() {
                known.insert(env.to_string_lossy().into_owned());
            }
        }
    }
    let mut ignored = Vec::new();
    for name in names {
        if !name.starts_with("TALLY_") || known.contains(&name) {
            continue;
        }
        if let Some(meant) = misspelt(&name, &known) {
            return Err(ConfigError(format!(
                "the environment variable {name} is not a tally setting: did you mean {meant}?"
            )));
        }
        ignored.push(name);
    }
    ignored.sort();
    Ok(ignored)
}

/// The known name `name` is a near miss of: at most two edits, and those at
/// most a fifth of the name (so `TALLY_LOGS` is not taken for `TALLY_LOG`'s
/// typo, but `TALLY_TOKEN` is for `TALLY_TOKENS`'s).
fn misspelt<'a>(name: &str, known: &'a BTreeSet<String>) -> Option<&'a str> {
    let name = name.strip_prefix("TALLY_").unwrap_or(name);
    known
        .iter()
        .filter_map(|k| {
            let short = k.strip_prefix("TALLY_").unwrap_or(k);
            let d = strsim::damerau_levenshtein(name, short);
            (d <= 2 && d * 5 <= short.len().max(name.len())).then_some((d, k.as_str()))
        })
        .min()
        .map(|(_, k)| k)
}

/// Each option of the command, its value as given and where it came from.
fn settings_of(
    command: &Command,
    matches: &ArgMatches,
    file_places: &std::collections::BTreeMap<String, String>,
) -> Vec<Setting> {
    command
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version" | "config"))
        .filter(|a| !crate::cli::COMMAND_LINE_ONLY.contains(&a.get_id().as_str()))
        .map(|arg| {
            let key = arg.get_id().as_str().to_owned();
            let raw = matches
                .get_raw(&key)
                .and_then(|mut values| values.next())
                .map(|v| v.to_string_lossy().into_owned());
            let origin = match matches.value_source(&key) {
                Some(ValueSource::CommandLine) => {
                    Origin::Flag(format!("--{}", arg.get_long().unwrap_or(&key)))
                }
                Some(ValueSource::EnvVariable) => Origin::Env(
                    arg.get_env()
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                Some(ValueSource::DefaultValue) => match file_places.get(&key) {
                    Some(place) => Origin::File(place.clone()),
                    None => Origin::Default,
                },
                _ => Origin::Unset,
            };
            Setting {
                raw: raw.filter(|_| origin != Origin::Unset),
                key,
                origin,
                secret: arg.is_hide_env_values_set(),
                switch: is_boolean(arg),
            }
        })
        .collect()
}

/// A switch (`--log-json`) or an option taking `true` or `false`
/// (`--access-log false`): its value is written as a TOML boolean.
fn is_boolean(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
        || arg
            .get_possible_values()
            .iter()
            .map(|v| v.get_name())
            .eq(["true", "false"])
}

#[cfg(test)]
mod tests;
