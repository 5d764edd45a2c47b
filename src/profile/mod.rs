//! Servers pushbench did not write, chosen with `--server NAME`: each described by a profile
//! file under `servers/` (shipped in the binary, or any file named by its path), and the
//! `server` setting that names one for both sides of a row. What a profile says is read here;
//! starting the server and publishing through it is [`crate::outside`]'s.

mod format;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

pub use format::{Fill, HttpPublish, Presence, Profile, Publish, Start, Subscription};

use crate::settings::{Declared, Setting, SettingValues, Side, Value};

/// The name of pushbench's own server (`pushbench serve`): no profile.
pub const OWN: &str = "pushbench";

/// The profiles shipped with pushbench: `servers/NAME.toml`, compiled in so that the binary
/// finds them from anywhere.
const SHIPPED: &[(&str, &str)] = &[
    ("nchan", include_str!("../../servers/nchan.toml")),
    ("mosquitto", include_str!("../../servers/mosquitto.toml")),
];

/// Which server the subscribers go to.
pub static SERVER: Setting<ServerChoice> = Setting {
    name: "server",
    help: "The server subscribers go to: `pushbench` (its own), a shipped profile of a server \
           pushbench did not write (`nchan`, `mosquitto`; `pushbench servers` lists them), or a \
           profile file's path (*.toml). `serve` starts it on its address and publishes \
           through it",
    side: Side::Both,
    default: ServerChoice(None),
    min: ServerChoice(None),
};

/// pushbench's own server, or a profile's.
#[derive(Clone, Copy, Debug)]
pub struct ServerChoice(pub Option<&'static Profile>);

impl ServerChoice {
    /// Its name in results: the profile's, or `pushbench`.
    pub fn name(self) -> &'static str {
        self.0.map_or(OWN, |p| p.name.as_str())
    }
}

impl PartialEq for ServerChoice {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl PartialOrd for ServerChoice {
    /// Servers are not ordered: none is below the default.
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (self == other).then_some(std::cmp::Ordering::Equal)
    }
}

impl Value for ServerChoice {
    const KIND: &'static str = "NAME|FILE.toml";

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == OWN {
            return Ok(ServerChoice(None));
        }
        let profile = match text.ends_with(".toml") {
            true => from_file(Path::new(text))?,
            false => shipped(text)?,
        };
        Ok(ServerChoice(Some(profile)))
    }

    /// How a run's settings carry it: the name of pushbench's own or a shipped profile, the
    /// path of a profile file (which the other processes of the row read again).
    fn show(self) -> String {
        match self.0.and_then(|p| p.file.as_deref()) {
            Some(file) => file.display().to_string(),
            None => self.name().to_owned(),
        }
    }
}

/// Every shipped profile, read once (a shipped file that does not read is a bug its unit test
/// catches; here it is an error, never a panic).
pub fn shipped_profiles() -> Result<&'static [Profile], String> {
    static READ: OnceLock<Result<Vec<Profile>, String>> = OnceLock::new();
    READ.get_or_init(|| {
        SHIPPED
            .iter()
            .map(|(name, text)| read(text, &format!("servers/{name}.toml")))
            .collect()
    })
    .as_ref()
    .map(Vec::as_slice)
    .map_err(Clone::clone)
}

/// The shipped profile with this name.
fn shipped(name: &str) -> Result<&'static Profile, String> {
    let profiles = shipped_profiles()?;
    profiles.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        format!(
            "no server named {name:?}: `{OWN}` or a shipped profile ({}), or a profile file's \
             path ending in .toml",
            names.join(", ")
        )
    })
}

/// The profile in this file, read once per process (settings are read many times).
fn from_file(path: &Path) -> Result<&'static Profile, String> {
    static READ: OnceLock<Mutex<HashMap<std::path::PathBuf, &'static Profile>>> = OnceLock::new();
    let mut read_already = READ
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(profile) = read_already.get(path) {
        return Ok(profile);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("the profile {}: {e}", path.display()))?;
    // Kept for the process's life, as the shipped ones are: a setting's value is `'static`.
    let mut profile = read(&text, &path.display().to_string())?;
    profile.file = Some(path.to_owned());
    let profile: &'static Profile = Box::leak(Box::new(profile));
    read_already.insert(path.to_owned(), profile);
    Ok(profile)
}

/// Reads a profile's text, saying where it is wrong.
fn read(text: &str, origin: &str) -> Result<Profile, String> {
    let profile: Profile = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
    if profile.name == OWN || profile.name.is_empty() {
        return Err(format!(
            "{origin}: a profile cannot be named {:?}",
            profile.name
        ));
    }
    if profile.start.program.is_empty() {
        return Err(format!("{origin}: [start] program names no program"));
    }
    Ok(profile)
}

impl Profile {
    /// How `transport`'s subscribers reach this server, or why they cannot.
    pub fn subscription(&self, transport: &str) -> Result<&Subscription, String> {
        self.subscribe.get(transport).ok_or_else(|| {
            let served: Vec<&str> = self.subscribe.keys().map(String::as_str).collect();
            format!(
                "--server {}: it has no {transport} subscribers (it serves {})",
                self.name,
                served.join(", ")
            )
        })
    }

    /// Why a row of `transport` with these settings (each of `declared`, the transport's)
    /// cannot run on this server, if it cannot: a transport it does not serve, or a setting
    /// of the serving side, away from its default, that it does not take (a fault pushbench's
    /// own servers inject, TLS, compression, two-way traffic, another implementation).
    pub fn refuses(
        &self,
        transport: &str,
        settings: &SettingValues,
        declared: &[&'static dyn Declared],
    ) -> Option<String> {
        if let Err(why) = self.subscription(transport) {
            return Some(why);
        }
        for setting in declared {
            let name = setting.name();
            let client_only = setting.side() == Side::Client;
            if client_only || name == SERVER.name || self.takes.iter().any(|t| t == name) {
                continue;
            }
            let Some(given) = settings.0.get(name) else {
                continue;
            };
            let as_default = setting.canonical(given).ok() == Some(setting.default_text());
            if !as_default {
                return Some(format!(
                    "--server {}: it does not take --{name} {given} (only pushbench's own \
                     server does; it takes {})",
                    self.name,
                    match self.takes.is_empty() {
                        true => "no server-side setting".to_owned(),
                        false => self.takes.join(", "),
                    }
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped profile reads, under the name its file has.
    #[test]
    fn shipped_profiles_read() {
        let profiles = shipped_profiles().unwrap();
        assert_eq!(profiles.len(), SHIPPED.len());
        for (profile, (name, _)) in profiles.iter().zip(SHIPPED) {
            assert_eq!(&profile.name, name);
            assert!(!profile.subscribe.is_empty(), "{name}");
        }
    }

    /// The setting reads `pushbench`, a shipped name and a file, and says what is wrong with
    /// anything else, naming the line of a bad key.
    #[test]
    fn the_server_setting_parses() {
        assert_eq!(ServerChoice::parse("pushbench").unwrap().name(), OWN);
        assert_eq!(ServerChoice::parse(" nchan ").unwrap().name(), "nchan");
        let unknown = ServerChoice::parse("caddy").unwrap_err();
        assert!(
            unknown.contains("nchan") && unknown.contains("mosquitto"),
            "{unknown}"
        );
        let dir = std::env::temp_dir().join(format!("pushbench-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "name = \"x\"\nsumary = \"typo\"\n").unwrap();
        let why = ServerChoice::parse(bad.to_str().unwrap()).unwrap_err();
        assert!(why.contains("bad.toml") && why.contains("line 2"), "{why}");
        assert!(why.contains("sumary"), "{why}");
        // A profile of one's own is carried by its path, so that each process of the row reads
        // it again (its name is no shipped one's), and named in results by its name.
        let own = dir.join("own.toml");
        let nchan = SHIPPED[0].1.replace("name = \"nchan\"", "name = \"mine\"");
        std::fs::write(&own, nchan).unwrap();
        let choice = ServerChoice::parse(own.to_str().unwrap()).unwrap();
        assert_eq!(choice.name(), "mine");
        assert_eq!(choice.show(), own.display().to_string());
        assert_eq!(ServerChoice::parse(&choice.show()).unwrap().name(), "mine");
        let missing = ServerChoice::parse("/nonexistent/x.toml").unwrap_err();
        assert!(missing.contains("/nonexistent/x.toml"), "{missing}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A transport the server does not serve, and a serving-side setting it does not take,
    /// are refused with the reason; client-side settings and defaults pass.
    #[test]
    fn a_profile_refuses_what_it_cannot_do() {
        static FAULT: Setting<u64> = Setting {
            name: "a-fault",
            help: "",
            side: Side::Server,
            default: 0,
            min: 0,
        };
        static BUFFER: Setting<u64> = Setting {
            name: "a-buffer",
            help: "",
            side: Side::Client,
            default: 0,
            min: 0,
        };
        let nchan = shipped("nchan").unwrap();
        let declared: &[&'static dyn Declared] = &[&FAULT, &BUFFER];
        let pairs = |p: &[(&str, &str)]| {
            SettingValues::from_pairs(p.iter().map(|(a, b)| (a.to_string(), b.to_string())))
        };
        let why = nchan.refuses("tcp", &pairs(&[]), declared).unwrap();
        assert!(
            why.contains("no tcp subscribers") && why.contains("sse"),
            "{why}"
        );
        let fine = pairs(&[("a-fault", "0"), ("a-buffer", "9")]);
        assert_eq!(nchan.refuses("sse", &fine, declared), None);
        let why = nchan
            .refuses("sse", &pairs(&[("a-fault", "3")]), declared)
            .unwrap();
        assert!(why.contains("--a-fault 3"), "{why}");
    }
}
