//! The transports' declared credentials as flags of `serve` and `load`, built from the
//! declarations at start-up, as settings are: each secret is read from `--<name>-file FILE`
//! or the environment's `PUSHBENCH_<NAME>` (never argv, where `ps` shows it), and each
//! consent is a flag of `serve`. A new credential in a transport's file is a new flag here,
//! with nothing here changing.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::setting_flags::{For, SERVE};
use crate::transport::credentials::{declared, Credential, Kind};
use crate::transport::Credentials;

/// Credentials named on the command line: files holding secrets, and consents.
#[derive(Clone, Debug, Default)]
pub struct CredentialFlags<const FOR: For> {
    /// Secret files by credential name.
    files: Vec<(&'static Credential, PathBuf)>,
    /// Consents given.
    consents: Vec<&'static Credential>,
}

/// Each declared credential once, in list order.
fn distinct() -> Vec<&'static Credential> {
    let mut seen = BTreeSet::new();
    declared().filter(|c| seen.insert(c.name)).collect()
}

/// The flag of a secret.
fn file_flag(credential: &Credential) -> String {
    format!("{}-file", credential.name)
}

/// Whether a subcommand takes this credential's flag: consents are the server operator's.
fn takes(for_: For, credential: &Credential) -> bool {
    !credential.is_consent() || for_ == SERVE
}

impl<const FOR: For> CredentialFlags<FOR> {
    /// The credentials given: each secret from its file, or else from the environment (set
    /// but empty counts as unset, as in a script that exports it for every transport), and
    /// each consent. A secret that is not well-formed is an error that says where it came
    /// from.
    pub fn read(&self) -> anyhow::Result<Credentials> {
        let mut credentials = Credentials::default();
        for credential in distinct() {
            match credential.kind {
                Kind::Secret { check, .. } => {
                    let file = self.files.iter().find(|(c, _)| c.name == credential.name);
                    let (text, source) = match file {
                        Some((_, path)) => {
                            let text = std::fs::read_to_string(path)
                                .with_context(|| format!("reading {}", path.display()))?;
                            (text.trim().to_owned(), path.display().to_string())
                        }
                        None => match std::env::var(credential.env()) {
                            Ok(text) if !text.trim().is_empty() => {
                                (text.trim().to_owned(), credential.env())
                            }
                            _ => continue,
                        },
                    };
                    check(&text).map_err(|why| anyhow::anyhow!("in {source}: {why}"))?;
                    credentials.set(credential, text);
                }
                Kind::Consent { .. } => {
                    if self.consents.iter().any(|c| c.name == credential.name) {
                        credentials.consent(credential);
                    }
                }
            }
        }
        Ok(credentials)
    }
}

impl<const FOR: For> clap::FromArgMatches for CredentialFlags<FOR> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for credential in distinct().into_iter().filter(|c| takes(FOR, c)) {
            if credential.is_consent() {
                if matches.get_flag(credential.name) {
                    self.consents.push(credential);
                }
            } else if let Some(path) = matches.get_one::<PathBuf>(&file_flag(credential)) {
                self.files.push((credential, path.clone()));
            }
        }
        Ok(())
    }
}

impl<const FOR: For> clap::Args for CredentialFlags<FOR> {
    fn augment_args(mut command: Command) -> Command {
        command = command.next_help_heading("Credentials (declared by each transport)");
        for credential in distinct().into_iter().filter(|c| takes(FOR, c)) {
            let takers: Vec<&str> = crate::transport::Transport::ALL
                .iter()
                .filter(|t| {
                    t.spec()
                        .credentials
                        .iter()
                        .any(|c| c.name == credential.name)
                })
                .map(|t| t.name())
                .collect();
            command = command.arg(if credential.is_consent() {
                Arg::new(credential.name)
                    .long(credential.name)
                    .action(ArgAction::SetTrue)
                    .help(format!("{} [{}]", credential.help, takers.join(", ")))
            } else {
                Arg::new(file_flag(credential))
                    .long(file_flag(credential))
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help(format!(
                        "{}: a file holding it (else {} in the environment; for `serve`, made \
                         and printed when absent) [{}]",
                        credential.help,
                        credential.env(),
                        takers.join(", ")
                    ))
            });
        }
        command.next_help_heading(None)
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}
