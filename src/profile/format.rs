//! A server profile's file: how to start a server pushbench did not write, how to publish
//! through it, how each transport subscribes to it, and which of the transports' settings it
//! honours. Declarative, and about no server in particular: `servers/*.toml` holds one per
//! server, read strictly (an unknown key is an error naming its line).

use std::collections::BTreeMap;

use serde::Deserialize;

/// One server's profile, as its file says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Its name in flags and results (`--server nchan`, the key's `server`).
    pub name: String,
    /// What it is, in one line (versions as the package manager installs them).
    pub summary: String,
    /// The script that installs it here, named when its program is missing.
    #[serde(default)]
    pub install: Option<String>,
    /// How to start it.
    pub start: Start,
    /// How the stream is published through it.
    pub publish: Publish,
    /// How each transport's subscribers reach it, by transport name.
    pub subscribe: BTreeMap<String, Subscription>,
    /// The transports' settings it honours besides client-side ones (given any other, a row
    /// is refused: the server cannot do what pushbench's own would).
    #[serde(default)]
    pub takes: Vec<String>,
    /// The file it was read from, for one not shipped: the `server` setting names it so, as
    /// every process of a row must read the same profile (its name alone is not enough).
    #[serde(skip)]
    pub file: Option<std::path::PathBuf>,
}

/// How the server is started: a program on the row's address, with files written for it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    /// Where the program may be, tried in order (a name is looked up on `PATH`).
    pub program: Vec<String>,
    /// Its arguments (templates).
    #[serde(default)]
    pub args: Vec<String>,
    /// Files it needs besides the program (a module it loads), checked before it starts.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Files written into its own scratch directory (`{dir}`) before it starts: name, then
    /// contents (templates).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// How long it may take to accept connections on its address, seconds.
    #[serde(default = "ready_within")]
    pub ready_within_secs: u64,
}

fn ready_within() -> u64 {
    10
}

/// How pushbench publishes the canonical events through the server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum Publish {
    /// An HTTP request per event, in order, the event as the body.
    Http(HttpPublish),
    /// The transport's own server, as a publisher through this one (a broker), pointed at it
    /// by these transport settings (templates).
    Transport {
        /// Transport settings for the serving side.
        settings: BTreeMap<String, String>,
    },
}

/// Publishing over HTTP, and how the server says who is subscribed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPublish {
    /// The request's method.
    pub method: String,
    /// Its path (template, `{topic}` the channel).
    pub path: String,
    /// Its headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How the server says how many subscribers a channel has.
    pub presence: Presence,
}

/// A request whose JSON answer counts a channel's subscribers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presence {
    /// Its path (template).
    pub path: String,
    /// Its headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The field of the JSON answer that holds the count.
    pub field: String,
}

/// How one transport's subscribers reach the server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// The path subscribers request (template; none: the transport's own).
    #[serde(default)]
    pub path: Option<String>,
    /// What the transport's clients need to know besides, by name, handed to them as their
    /// target's parameters (templates): long polling's `cursor` says how the server keeps a
    /// subscriber's place.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// What fills a profile's templates.
pub struct Fill<'a> {
    /// The address the server listens on.
    pub listen: std::net::SocketAddr,
    /// Its scratch directory.
    pub dir: &'a std::path::Path,
    /// The channel (topic) the stream goes to.
    pub topic: &'a str,
}

impl Fill<'_> {
    /// `template` with `{ip}`, `{port}`, `{listen}`, `{dir}` and `{topic}` filled in.
    pub fn fill(&self, template: &str) -> String {
        template
            .replace("{listen}", &self.listen.to_string())
            .replace("{ip}", &self.listen.ip().to_string())
            .replace("{port}", &self.listen.port().to_string())
            .replace("{dir}", &self.dir.display().to_string())
            .replace("{topic}", self.topic)
    }
}
