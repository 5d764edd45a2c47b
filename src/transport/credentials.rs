//! What a transport's server and subscribers share that nobody else may see, and what only
//! the operator may allow: its credentials. A transport declares them in its `SPEC`
//! ([`Credential`]); generic code makes, hands over and checks them without knowing what they
//! are:
//!
//! - `run` makes every secret fresh for each server it starts and hands each side what it
//!   needs, and gives the consents a run on its own machine needs ([`Credentials::for_run`]);
//! - `serve` makes the secrets it was not given and tells them once, since nobody else knows
//!   them ([`Credentials::complete`]);
//! - `load` reads them from files or the environment and refuses to start without the ones
//!   its side requires ([`Credentials::check`]).
//!
//! They travel only over the typed protocol (a child's job on stdin), never in argv, where
//! `ps` shows them, nor in results.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Spec, Transport};
use crate::settings::Side;

/// One credential a transport declares.
#[derive(Debug)]
pub struct Credential {
    /// Its name: the environment variable `PUSHBENCH_<NAME>` and, for a secret, the flag
    /// `--<name>-file`; for a consent, the flag `--<name>`.
    pub name: &'static str,
    /// What it is for.
    pub help: &'static str,
    /// A secret or a consent.
    pub kind: Kind,
}

/// What kind of credential it is.
#[derive(Debug)]
pub enum Kind {
    /// A secret text both sides may need.
    Secret {
        /// Which side must have it to run at all (the other side may have it or not).
        required_by: Option<Side>,
        /// Makes a fresh one, given the credentials so far (none, where a consent makes it
        /// unneeded).
        make: fn(&Credentials) -> Option<String>,
        /// Checks a given one, saying what is wrong.
        check: fn(&str) -> Result<(), String>,
    },
    /// A yes the server's operator gives (`serve --<name>`).
    Consent {
        /// Whether `run` gives it: every peer of its servers is its own (on this machine or in
        /// network namespaces it made).
        in_runs: bool,
    },
}

impl Credential {
    /// The environment variable a secret may be read from.
    pub fn env(&self) -> String {
        format!("PUSHBENCH_{}", self.name.to_uppercase().replace('-', "_"))
    }

    /// Whether it is a consent.
    pub fn is_consent(&self) -> bool {
        matches!(self.kind, Kind::Consent { .. })
    }
}

/// Credentials by name: the secrets' text, and `yes` for each consent given.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Credentials(BTreeMap<String, String>);

/// What a consent holds when given.
const YES: &str = "yes";

impl fmt::Debug for Credentials {
    /// The names only: a credential's value never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Credentials {
    /// The value of `credential`, if it is here.
    pub fn get(&self, credential: &Credential) -> Option<&str> {
        self.0.get(credential.name).map(String::as_str)
    }

    /// Whether `consent` was given.
    pub fn consents(&self, consent: &Credential) -> bool {
        self.get(consent) == Some(YES)
    }

    /// Sets a secret's value.
    pub fn set(&mut self, credential: &Credential, value: String) {
        self.0.insert(credential.name.to_owned(), value);
    }

    /// Gives a consent.
    pub fn consent(&mut self, consent: &Credential) {
        self.0.insert(consent.name.to_owned(), YES.to_owned());
    }

    /// Only the credentials named.
    pub fn only(&self, names: &[String]) -> Self {
        Self(
            self.0
                .iter()
                .filter(|(name, _)| names.contains(name))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    /// Whether none is here.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each credential here with its value, for telling the ones a server made.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// What `run` gives a server of `spec`'s transport: every secret fresh, and the consents
    /// a run on its own machine gives.
    pub fn for_run(spec: &Spec) -> Self {
        let mut credentials = Self::default();
        credentials.consent_as_runs(spec.credentials.iter().copied());
        credentials.complete(spec.credentials.iter().copied());
        credentials
    }

    /// Every secret any transport declares, made fresh: what a server set up in code (a test,
    /// a bench) holds until told otherwise.
    pub fn fresh() -> Self {
        let mut credentials = Self::default();
        credentials.complete(declared());
        credentials
    }

    /// As [`Credentials::fresh`], with the consents a run on its own machine gives (its peers
    /// are on loopback).
    pub fn fresh_local() -> Self {
        let mut credentials = Self::default();
        credentials.consent_as_runs(declared());
        credentials.complete(declared());
        credentials
    }

    /// Gives each of `credentials`' consents that runs give.
    fn consent_as_runs(&mut self, credentials: impl Iterator<Item = &'static Credential>) {
        for credential in credentials {
            if let Kind::Consent { in_runs: true } = credential.kind {
                self.consent(credential);
            }
        }
    }

    /// Makes each of `credentials`' secrets that is not here yet; returns the names made,
    /// for a server to tell them (nobody else knows them).
    pub fn complete(
        &mut self,
        credentials: impl Iterator<Item = &'static Credential>,
    ) -> Vec<&'static str> {
        let mut made = Vec::new();
        for credential in credentials {
            if let Kind::Secret { make, .. } = credential.kind {
                if self.get(credential).is_none() {
                    if let Some(value) = make(self) {
                        self.set(credential, value);
                        made.push(credential.name);
                    }
                }
            }
        }
        made
    }

    /// What subscribers are handed: the secrets, not the server's consents.
    pub fn for_subscribers(&self) -> Self {
        let mut handed = Self::default();
        for credential in declared().filter(|c| !c.is_consent()) {
            if let Some(value) = self.get(credential) {
                handed.set(credential, value.to_owned());
            }
        }
        handed
    }

    /// Checks the credentials a process on `side` holds for `spec`'s transport: each it
    /// declares is well-formed, and the ones `side` requires are here (others' are let be: a
    /// script may export every transport's).
    pub fn check(&self, spec: &Spec, side: Side) -> Result<(), String> {
        for credential in spec.credentials {
            let Kind::Secret {
                required_by, check, ..
            } = credential.kind
            else {
                continue;
            };
            match self.get(credential) {
                Some(value) => check(value).map_err(|why| format!("{}: {why}", credential.name))?,
                None if required_by.is_some_and(|r| r == side || r == Side::Both) => {
                    return Err(format!(
                        "{} needs the {} (printed by `pushbench serve`): --{}-file FILE, or {} \
                         in the environment",
                        spec.name,
                        credential.name.replace('-', " "),
                        credential.name,
                        credential.env()
                    ))
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// Every credential any transport declares, in list order (one declared by several transports
/// is one static, met more than once).
pub fn declared() -> impl Iterator<Item = &'static Credential> {
    Transport::ALL
        .iter()
        .flat_map(|t| t.spec().credentials.iter().copied())
}
