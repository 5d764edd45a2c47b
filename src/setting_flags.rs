//! The transports' declared settings as command-line flags and scenario-file keys, built from
//! the declarations at start-up: a new setting in a transport's file is a new flag of `serve`,
//! `load` or `run` (whichever reads it) and a new scenario key, with its help and default, and
//! nothing here changes. `run` takes a comma-separated list (or a TOML list) to sweep a setting:
//! each value becomes a row of its own.

use std::collections::BTreeMap;

use clap::{Arg, ArgMatches, Command};
use serde::{Deserialize, Serialize};

use crate::harness::settings::{declared_settings, setting_named};
use crate::settings::{Declared, SettingValues, Side};

/// Which subcommand the flags are for: `serve` takes server settings, `load` client settings,
/// `run` all of them, swept.
pub type For = u8;
/// `pushbench serve`.
pub const SERVE: For = 0;
/// `pushbench load`.
pub const LOAD: For = 1;
/// `pushbench run` (lists sweep).
pub const RUN: For = 2;

/// Settings given by name, each a list of canonical values (one unless `run` sweeps it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SettingFlags<const FOR: For> {
    /// Values by setting name.
    pub given: BTreeMap<String, Vec<String>>,
}

/// Whether a subcommand takes this setting.
fn takes(for_: For, setting: &dyn Declared) -> bool {
    match for_ {
        SERVE => setting.side().reaches(Side::Server),
        LOAD => setting.side().reaches(Side::Client),
        _ => true,
    }
}

/// Checks `text` for `setting`: each value of a list (comma-separated, or as the setting's
/// kind says) where `run` may sweep, else one.
fn parse(setting: &dyn Declared, text: &str, sweep: bool) -> Result<Vec<String>, String> {
    let values: Vec<&str> = if sweep {
        text.split(setting.list_separator()).collect()
    } else {
        vec![text]
    };
    values
        .into_iter()
        .map(|value| {
            setting
                .canonical(value)
                .map_err(|why| format!("--{}: {why}", setting.name()))
        })
        .collect()
}

impl<const FOR: For> SettingFlags<FOR> {
    /// These, with `over`'s where it has them.
    pub fn overridden_by(mut self, over: Self) -> Self {
        self.given.extend(over.given);
        self
    }

    /// One value per setting (`serve` and `load` never sweep).
    pub fn values(&self) -> SettingValues {
        SettingValues::from_pairs(
            self.given
                .iter()
                .filter_map(|(name, values)| Some((name.clone(), values.first()?.clone()))),
        )
    }
}

impl<const FOR: For> clap::FromArgMatches for SettingFlags<FOR> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for (setting, _) in declared_settings()
            .into_iter()
            .filter(|(s, _)| takes(FOR, *s))
        {
            if let Some(values) = matches.get_one::<Vec<String>>(setting.name()) {
                self.given.insert(setting.name().to_owned(), values.clone());
            }
        }
        Ok(())
    }
}

impl<const FOR: For> clap::Args for SettingFlags<FOR> {
    fn augment_args(mut command: Command) -> Command {
        command = command.next_help_heading("Transport settings (declared by each transport)");
        for (setting, takers) in declared_settings()
            .into_iter()
            .filter(|(s, _)| takes(FOR, *s))
        {
            let sweep = FOR == RUN;
            let takers: Vec<&str> = takers.iter().map(|t| t.name()).collect();
            let help = format!(
                "{} [{}; default {}{}]",
                setting.help(),
                takers.join(", "),
                setting.default_text(),
                match (sweep, setting.list_separator()) {
                    (false, _) => String::new(),
                    (true, ',') => "; a list sweeps".into(),
                    (true, separator) => format!("; a {separator}-separated list sweeps"),
                }
            );
            command = command.arg(
                Arg::new(setting.name())
                    .long(setting.name())
                    .value_name(setting.kind())
                    .help(help)
                    .value_parser(move |text: &str| parse(setting, text, sweep)),
            );
        }
        command.next_help_heading(None)
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

/// A scenario file's value for a setting: text, a number, a boolean, or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum FileValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    List(Vec<FileValue>),
}

impl FileValue {
    fn texts(self, into: &mut Vec<String>) {
        match self {
            FileValue::Text(text) => into.push(text),
            FileValue::Integer(n) => into.push(n.to_string()),
            FileValue::Float(n) => into.push(n.to_string()),
            FileValue::Bool(b) => into.push(b.to_string()),
            FileValue::List(list) => list.into_iter().for_each(|v| v.texts(into)),
        }
    }
}

impl<'de, const FOR: For> Deserialize<'de> for SettingFlags<FOR> {
    /// The keys a scenario file has beyond its own fields: each must be a declared setting.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let raw = BTreeMap::<String, FileValue>::deserialize(d)?;
        let mut given = BTreeMap::new();
        for (key, value) in raw {
            let Some(setting) = setting_named(&key).filter(|s| takes(FOR, *s)) else {
                return Err(D::Error::custom(format!("unknown field `{key}`")));
            };
            let mut texts = Vec::new();
            value.texts(&mut texts);
            if texts.is_empty() || (FOR != RUN && texts.len() > 1) {
                return Err(D::Error::custom(format!(
                    "`{key}` needs {}",
                    if FOR == RUN {
                        "at least one value"
                    } else {
                        "one value"
                    }
                )));
            }
            let canonical = texts
                .iter()
                .map(|text| setting.canonical(text))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|why| D::Error::custom(format!("`{key}`: {why}")))?;
            given.insert(key, canonical);
        }
        Ok(Self { given })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Run {
        #[command(flatten)]
        settings: SettingFlags<RUN>,
    }

    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        settings: SettingFlags<SERVE>,
    }

    /// Every declared setting is a flag of `run`; `run` sweeps lists; values are canonical.
    #[test]
    fn flags_come_from_declarations() {
        let run = Run::try_parse_from([
            "run",
            "--longpoll-hold",
            "2000ms,1m",
            "--poll-interval",
            "20ms",
        ])
        .unwrap();
        assert_eq!(run.settings.given["longpoll-hold"], ["2s", "60s"]);
        assert_eq!(run.settings.given["poll-interval"], ["20ms"]);
        // A link's toxics hold commas: its sweep is semicolon-separated.
        let links = Run::try_parse_from(["run", "--link", "none;latency=50ms,jitter=5ms"]).unwrap();
        assert_eq!(
            links.settings.given["link"],
            ["none", "latency=50ms,jitter=5ms"]
        );
        for (setting, _) in declared_settings() {
            let flag = format!("--{}", setting.name());
            let value = setting.default_text();
            assert!(
                Run::try_parse_from(["run", flag.as_str(), value.as_str()]).is_ok(),
                "{flag}"
            );
        }
    }

    /// `serve` takes only what the server reads, one value each, and says what is wrong.
    #[test]
    fn serve_takes_server_settings_only() {
        assert!(Serve::try_parse_from(["serve", "--poll-interval", "20ms"]).is_err());
        let error = Serve::try_parse_from(["serve", "--longpoll-hold", "1s,2s"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("--longpoll-hold") && error.contains("duration"),
            "{error}"
        );
        let serve = Serve::try_parse_from(["serve", "--longpoll-hold", "1500ms"]).unwrap();
        assert_eq!(serve.settings.values().0["longpoll-hold"], "1500ms");
    }
}
