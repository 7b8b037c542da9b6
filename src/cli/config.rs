//! One configuration: flags, `CLICKFLOW_*` variables and a TOML file, in that order of
//! precedence, then the built-in defaults.
//!
//! Every flag of every subcommand is also a variable, `CLICKFLOW_` and its name in capitals
//! with `_` for `-` (`--sink-writers` is `CLICKFLOW_SINK_WRITERS`), except where a
//! conventional name exists (`DATABASE_URL`). The file (`--config FILE` or
//! `CLICKFLOW_CONFIG`) holds the same names as keys: at the top level they apply to every
//! subcommand that has the flag, in a `[run]` (`[demo]`, …) table to that subcommand only,
//! winning over the top level. A key that is no flag is an error naming it. Secrets belong in
//! files (`api-token-file`, `database-url-file`) or the environment, not in the config file.
//!
//! The layering is clap's own: the file's values become the flags' defaults and the variables
//! are clap's `env`, so one parse applies all of it and knows where each value came from
//! ([`check`] prints it).

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, CommandFactory, FromArgMatches};

use super::Cli;

/// The parsed command line with the file and variables applied, and which argument values
/// came from the file.
pub struct Layered {
    /// The command line.
    pub cli: Cli,
    matches: ArgMatches,
    from_file: HashSet<(String, String)>,
    file: Option<PathBuf>,
}

/// Parses `args` (the program name first) with the config file and the variables applied.
/// Help, version and usage errors are clap's: printed, and the process exits.
pub fn parse(args: Vec<OsString>) -> anyhow::Result<Layered> {
    let file = config_file(&args);
    let table = match &file {
        Some(path) => Some(read_table(path)?),
        None => None,
    };
    let mut command = Cli::command();
    let mut from_file = HashSet::new();
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect();
    for name in &names {
        command = command.mut_subcommand(name, |sub| {
            let ids: Vec<(String, Option<String>)> = sub
                .get_arguments()
                .map(|arg| (arg.get_id().to_string(), arg.get_long().map(String::from)))
                .collect();
            ids.into_iter().fold(sub, |sub, (id, long)| {
                let Some(long) = long else { return sub };
                sub.mut_arg(&id, |arg| with_env(arg, &long))
            })
        });
    }
    if let Some(table) = &table {
        let (layered, applied) = apply_file(command, table)?;
        command = layered;
        from_file = applied;
    }
    let matches = command.get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Layered {
        cli,
        matches,
        from_file,
        file,
    })
}

/// `--config FILE`, `--config=FILE` or `CLICKFLOW_CONFIG`.
fn config_file(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("CLICKFLOW_CONFIG").map(PathBuf::from)
}

fn read_table(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("the config file {}", path.display()))
}

/// The variable of a flag: its own (`DATABASE_URL`), else `CLICKFLOW_<NAME>`. `--help`
/// names the variable but never shows its value, which may be a secret.
fn with_env(arg: Arg, long: &str) -> Arg {
    if matches!(long, "help" | "version") {
        return arg;
    }
    let arg = arg.hide_env_values(true);
    if arg.get_env().is_some() {
        return arg;
    }
    arg.env(env_name(long))
}

fn env_name(long: &str) -> String {
    format!("CLICKFLOW_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// The file's values as the defaults of the flags they name; the (subcommand, argument id)
/// pairs they set.
fn apply_file(
    mut command: clap::Command,
    table: &toml::Table,
) -> anyhow::Result<(clap::Command, HashSet<(String, String)>)> {
    let subcommands: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect();
    let mut applied = HashSet::new();
    let mut used: HashSet<String> = HashSet::new();
    for name in &subcommands {
        // Top-level keys first, then the subcommand's own table over them.
        let mut values: BTreeMap<String, (String, &toml::Value)> = BTreeMap::new();
        for (key, value) in table {
            if !value.is_table() {
                values.insert(key.replace('_', "-"), (key.clone(), value));
            }
        }
        if let Some(own) = table.get(name) {
            let own = own
                .as_table()
                .with_context(|| format!("config key {name:?} must be a table ([{name}])"))?;
            for (key, value) in own {
                values.insert(key.replace('_', "-"), (format!("{name}.{key}"), value));
            }
        }
        let sub = command.find_subcommand(name).expect("listed above").clone();
        let mut sub = sub;
        for (long, (key, value)) in values {
            let Some(arg) = sub
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
            else {
                if key.contains('.') {
                    anyhow::bail!("config key {key:?}: `clickflow {name}` has no flag --{long}");
                }
                continue;
            };
            let id = arg.get_id().to_string();
            let strings = as_strings(value).with_context(|| format!("config key {key:?}"))?;
            sub = sub.mut_arg(&id, |arg| arg.default_values(strings));
            applied.insert((name.clone(), id));
            used.insert(key);
        }
        command = command.mut_subcommand(name, |_| sub);
    }
    // Global flags (`log-format`, `kafka-option`) live on the root.
    for (key, value) in table {
        let long = key.replace('_', "-");
        let id = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .map(|a| a.get_id().to_string());
        if let Some(id) = id {
            let strings = as_strings(value).with_context(|| format!("config key {key:?}"))?;
            command = command.mut_arg(&id, |arg| arg.default_values(strings));
            applied.insert((String::new(), id));
            used.insert(key.clone());
        }
    }
    for (key, value) in table {
        if !value.is_table() && !used.contains(key) {
            anyhow::bail!("config key {key:?} is not a flag of any clickflow command");
        }
        if value.is_table() && !subcommands.contains(key) {
            anyhow::bail!("config table [{key}] is not a clickflow command");
        }
    }
    Ok((command, applied))
}

/// A TOML value as flag values: scalars as text, arrays as one value each.
fn as_strings(value: &toml::Value) -> anyhow::Result<Vec<String>> {
    Ok(match value {
        toml::Value::String(s) => vec![s.clone()],
        toml::Value::Integer(i) => vec![i.to_string()],
        toml::Value::Float(f) => vec![f.to_string()],
        toml::Value::Boolean(b) => vec![b.to_string()],
        toml::Value::Array(items) => items
            .iter()
            .map(|item| as_strings(item).map(|mut v| v.remove(0)))
            .collect::<anyhow::Result<_>>()?,
        other => anyhow::bail!("a {} cannot be a flag's value", other.type_str()),
    })
}

impl Layered {
    /// The effective settings of the subcommand `name`: each flag with its value and where
    /// it came from, secrets redacted; one per line, as `config check` prints them.
    pub fn describe(&self, name: &str) -> anyhow::Result<String> {
        let Some((_, sub)) = self.matches.subcommand().filter(|(n, _)| *n == name) else {
            anyhow::bail!("no {name} command line to describe");
        };
        let command = Cli::command();
        let definition = command.find_subcommand(name).expect("parsed");
        let mut lines = Vec::new();
        if let Some(file) = &self.file {
            lines.push(format!("# config file: {}", file.display()));
        }
        let mut args: Vec<&Arg> = definition
            .get_arguments()
            .chain(command.get_arguments())
            .filter(|arg| {
                arg.get_long()
                    .is_some_and(|l| l != "help" && l != "version")
            })
            .collect();
        args.sort_by_key(|arg| arg.get_long());
        args.dedup_by_key(|arg| arg.get_long());
        for arg in args {
            let id = arg.get_id().as_str();
            let long = arg.get_long().unwrap_or(id);
            let matches = if sub.try_get_raw(id).is_ok() {
                sub
            } else {
                &self.matches
            };
            let Ok(Some(raw)) = matches.try_get_raw(id) else {
                lines.push(format!("{long} = (unset)"));
                continue;
            };
            let values: Vec<String> = raw.map(|v| redact(long, &v.to_string_lossy())).collect();
            let from_file = self.from_file.contains(&(name.to_string(), id.to_string()))
                || self.from_file.contains(&(String::new(), id.to_string()));
            let source = match matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag".to_string(),
                Some(ValueSource::EnvVariable) => format!(
                    "env {}",
                    arg.get_env()
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_else(|| env_name(long))
                ),
                Some(ValueSource::DefaultValue) if from_file => "config file".to_string(),
                _ => "default".to_string(),
            };
            lines.push(format!("{long} = {}   # {source}", values.join(", ")));
        }
        Ok(lines.join("\n"))
    }
}

/// A value fit to print: secrets replaced, a URL's password taken out.
fn redact(long: &str, value: &str) -> String {
    if long.contains("token") && !long.ends_with("-file") {
        return "<redacted>".into();
    }
    if long == "kafka-option" {
        return value
            .parse::<clickflow_sources::kafka::KafkaOption>()
            .map_or_else(|_| value.to_string(), |option| option.to_string());
    }
    match value.split_once("://") {
        Some((scheme, rest)) if rest.contains('@') => {
            let (userinfo, host) = rest.split_once('@').expect("checked");
            match userinfo.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:<redacted>@{host}"),
                None => value.to_string(),
            }
        }
        _ => value.to_string(),
    }
}

/// `clickflow config check`: the effective settings of `args` (a subcommand and its flags,
/// `run` when empty), after `config` (the file the outer command line named) and the
/// variables, secrets redacted.
pub fn check(config: Option<&Path>, args: &[String]) -> anyhow::Result<()> {
    let mut argv: Vec<OsString> = vec!["clickflow".into()];
    if let Some(path) = config {
        let mut flag = OsString::from("--config=");
        flag.push(path);
        argv.push(flag);
    }
    if args.is_empty() {
        argv.push("run".into());
    }
    argv.extend(args.iter().map(OsString::from));
    let layered = parse(argv)?;
    let name = layered
        .matches
        .subcommand_name()
        .context("name a command to check, e.g. `clickflow config check run`")?
        .to_string();
    println!("{}", layered.describe(&name)?);
    println!("# the {name} command line is valid");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_named_after_flags() {
        assert_eq!(env_name("sink-writers"), "CLICKFLOW_SINK_WRITERS");
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact("database-url", "postgres://app:s3cret@db:5432/shop"),
            "postgres://app:<redacted>@db:5432/shop"
        );
        assert_eq!(redact("api-token", "0123456789abcdef"), "<redacted>");
        assert_eq!(redact("api-token-file", "/run/token"), "/run/token");
        assert_eq!(
            redact("kafka-option", "sasl.password=x"),
            "sasl.password=<redacted>"
        );
    }
}
