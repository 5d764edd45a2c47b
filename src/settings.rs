//! Settings a transport declares once, in its own file, with their defaults: a [`Setting`] is
//! a typed handle (`longpoll::HOLD`), so a transport reads its value with no name to misspell;
//! [`SettingValues`] carry the values by name through the CLI, scenario files, the typed
//! protocol to the children, and results, always as the same canonical text (`30s`, `4096`,
//! `true`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which process reads a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The server (`pushbench serve`).
    Server,
    /// The subscribers (`pushbench load`).
    Client,
    /// Both.
    Both,
    /// Neither: `pushbench run`, which starts the processes, acts on it (a fault such as
    /// restarting the server).
    Harness,
}

impl Side {
    /// Whether a process on `side` reads a setting of this side (`Both` asks for everything,
    /// as `run` does).
    pub fn reaches(self, side: Side) -> bool {
        side == Side::Both || (self != Side::Harness && (self == Side::Both || self == side))
    }
}

/// A value a setting can hold, with its one text form.
pub trait Value: Copy + Send + Sync + 'static {
    /// What the text form looks like, for help and errors.
    const KIND: &'static str;
    /// What separates the values of a swept list on `run`'s command line (a value whose own
    /// text holds commas, such as a link's toxics, needs another).
    const LIST_SEPARATOR: char = ',';
    /// Reads the text form.
    fn parse(text: &str) -> Result<Self, String>;
    /// The canonical text form.
    fn show(self) -> String;
}

impl Value for Duration {
    const KIND: &'static str = "DURATION";

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let scale = match unit {
            "us" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            _ => {
                return Err(format!(
                    "expected a duration such as 30s, 100ms or 250us, got {text:?}"
                ))
            }
        };
        number
            .parse::<f64>()
            .ok()
            .and_then(|n| Duration::try_from_secs_f64(n * scale).ok())
            .ok_or_else(|| {
                format!("expected a non-negative duration such as 30s or 100ms, got {text:?}")
            })
    }

    fn show(self) -> String {
        let us = self.as_micros();
        if us.is_multiple_of(1_000_000) {
            format!("{}s", us / 1_000_000)
        } else if us.is_multiple_of(1_000) {
            format!("{}ms", us / 1_000)
        } else {
            format!("{us}us")
        }
    }
}

impl Value for u64 {
    const KIND: &'static str = "N";

    fn parse(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("expected a whole number, got {text:?}"))
    }

    fn show(self) -> String {
        self.to_string()
    }
}

impl Value for f64 {
    const KIND: &'static str = "X";

    fn parse(text: &str) -> Result<Self, String> {
        match text.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
            _ => Err(format!("expected a non-negative number, got {text:?}")),
        }
    }

    fn show(self) -> String {
        // Whole numbers read as whole numbers (20, not 20.0), so row keys stay short.
        self.to_string()
    }
}

impl Value for bool {
    const KIND: &'static str = "on|off";

    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "true" | "on" => Ok(true),
            "false" | "off" => Ok(false),
            _ => Err(format!("expected on or off (true or false), got {text:?}")),
        }
    }

    fn show(self) -> String {
        if self { "on" } else { "off" }.to_owned()
    }
}

/// One setting of one transport: its name (the transport's name first, so names never clash:
/// `longpoll-hold`), what it does, who reads it, its default, and the smallest value that makes
/// sense.
#[derive(Debug)]
pub struct Setting<T> {
    /// Flag, scenario key and results key.
    pub name: &'static str,
    /// What it does.
    pub help: &'static str,
    /// Which process reads it.
    pub side: Side,
    /// Its value when none is given.
    pub default: T,
    /// The smallest value accepted.
    pub min: T,
}

impl<T: Value + PartialOrd> Setting<T> {
    /// Its value in `values`, or its default when absent.
    ///
    /// Values are checked where they enter (flags and scenario files as they are read, a
    /// child's job by [`SettingValues::check`] before it runs), so one that does not parse here
    /// is a bug in pushbench, never input: it stops the process rather than run with a default
    /// nobody asked for.
    pub fn read(&self, values: &SettingValues) -> T {
        match values.get(self) {
            Ok(value) => value.unwrap_or(self.default),
            Err(why) => panic!("a setting reached its reader unchecked: {why}"),
        }
    }

    /// The setting set to `value`, for callers that build values in code (tests).
    pub fn set(&self, value: T) -> (String, String) {
        (self.name.to_owned(), value.show())
    }
}

/// A setting whatever its type: what lists, parses and shows settings needs.
pub trait Declared: Sync {
    /// Flag, scenario key and results key.
    fn name(&self) -> &'static str;
    /// What it does.
    fn help(&self) -> &'static str;
    /// Which process reads it.
    fn side(&self) -> Side;
    /// What its text looks like.
    fn kind(&self) -> &'static str;
    /// Its default, as text.
    fn default_text(&self) -> String;
    /// Checks a value and gives its canonical text, or says what was expected.
    fn canonical(&self, text: &str) -> Result<String, String>;
    /// What separates the values of a swept list on the command line.
    fn list_separator(&self) -> char;
}

impl<T: Value + PartialOrd> Declared for Setting<T> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn help(&self) -> &'static str {
        self.help
    }
    fn side(&self) -> Side {
        self.side
    }
    fn kind(&self) -> &'static str {
        T::KIND
    }
    fn default_text(&self) -> String {
        self.default.show()
    }
    fn canonical(&self, text: &str) -> Result<String, String> {
        let value = T::parse(text)?;
        if value < self.min {
            return Err(format!(
                "{} must be at least {}, got {text:?}",
                self.name,
                self.min.show()
            ));
        }
        Ok(value.show())
    }
    fn list_separator(&self) -> char {
        T::LIST_SEPARATOR
    }
}

impl fmt::Debug for dyn Declared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Setting values by name, in canonical text. What a process ran with is every setting of its
/// transport that reaches its side, defaults included ([`SettingValues::effective`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SettingValues(pub BTreeMap<String, String>);

impl SettingValues {
    /// Values from `(name, text)` pairs, as given.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(pairs.into_iter().collect())
    }

    /// Every one of `settings` that reaches `side`, with its value here or its default.
    pub fn effective(&self, settings: &[&'static dyn Declared], side: Side) -> SettingValues {
        Self(
            settings
                .iter()
                .filter(|s| s.side().reaches(side))
                .map(|s| {
                    let value = self.0.get(s.name()).cloned();
                    (
                        s.name().to_owned(),
                        value.unwrap_or_else(|| s.default_text()),
                    )
                })
                .collect(),
        )
    }

    /// The value of `setting` here, if it is set; one that does not parse (or is below the
    /// setting's minimum) is an error naming the setting.
    pub fn get<T: Value + PartialOrd>(&self, setting: &Setting<T>) -> Result<Option<T>, String> {
        let Some(text) = self.0.get(setting.name) else {
            return Ok(None);
        };
        setting
            .canonical(text)
            .map_err(|why| format!("--{}: {why}", setting.name))?;
        T::parse(text)
            .map(Some)
            .map_err(|why| format!("--{}: {why}", setting.name))
    }

    /// Checks every value against the settings a process takes: each names one of them and
    /// parses, so a child handed a job with a misspelt or malformed setting refuses it at once
    /// instead of running with a default.
    pub fn check(&self, settings: &[&'static dyn Declared]) -> Result<(), String> {
        for (name, text) in &self.0 {
            let setting = settings.iter().find(|s| s.name() == name).ok_or_else(|| {
                let names: Vec<&str> = settings.iter().map(|s| s.name()).collect();
                format!(
                    "--{name} is not a setting here (these are: {})",
                    names.join(", ")
                )
            })?;
            setting
                .canonical(text)
                .map_err(|why| format!("--{name}: {why}"))?;
        }
        Ok(())
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `name=value` pairs, space-separated (row labels).
    pub fn label(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations read in any unit and show in the largest whole one.
    #[test]
    fn durations_round_trip() {
        for (text, shown) in [
            ("30s", "30s"),
            ("100ms", "100ms"),
            ("1.5s", "1500ms"),
            ("250us", "250us"),
            ("2m", "120s"),
        ] {
            assert_eq!(Duration::parse(text).unwrap().show(), shown, "{text}");
        }
        for bad in ["30", "-1s", "1h", "fast", ""] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }

    /// A value below the minimum, or of the wrong kind, is refused with the setting's name.
    #[test]
    fn canonical_checks_kind_and_minimum() {
        static S: Setting<u64> = Setting {
            name: "x-attempts",
            help: "",
            side: Side::Server,
            default: 8,
            min: 1,
        };
        assert_eq!(S.canonical(" 3 ").unwrap(), "3");
        assert!(S
            .canonical("0")
            .unwrap_err()
            .contains("x-attempts must be at least 1"));
        assert!(S.canonical("many").unwrap_err().contains("whole number"));
        let values = SettingValues::from_pairs([S.set(5)]);
        assert_eq!(S.read(&values), 5);
        assert_eq!(S.read(&SettingValues::default()), 8);
    }
}
