//! The first step of `pushbench run`: every combination a scenario measures (a row of the
//! results in one round), each with its key, every setting its transport takes and the given
//! settings it does not, in the order the rounds run them.

use crate::event::PayloadSizes;
use crate::profile::SERVER;
use crate::results::key::{RowKey, Workload as KeyWorkload};
use crate::results::scenario::Scenario;
use crate::results::Rounds;
use crate::transport::{SettingValues, Transport, CLIENT_IMPL, SERVER_IMPL};
use crate::workload::Workload;

use super::rounds;
use super::settings::settings_of;
use super::summary::Row;

/// One combination to measure: a row of the results, in one round.
#[derive(Clone)]
pub(super) struct Combination {
    /// What tells its row from the others, and its round.
    pub key: RowKey,
    /// The workload that runs (the key records it).
    pub workload: Workload,
    /// Every setting the run of the transport takes for this row.
    pub settings: SettingValues,
    /// Settings given to the run that this transport does not take.
    pub not_applied: Vec<String>,
}

impl Combination {
    /// What tells its row from the others, and which round this is.
    pub fn row(&self) -> Row<'_> {
        Row {
            key: &self.key,
            repeat: self.key.round,
        }
    }

    /// The transport, with its swept settings when there are any (`longpoll longpoll-hold=1s`).
    pub fn label(&self) -> String {
        self.row().label()
    }
}

/// Every combination in the order it runs: the plan once per round, each round in an order
/// drawn from the scenario's seed, and how the rounds were ordered (with more than one).
/// A knee search runs its rounds per level, so its plan runs once.
pub(super) fn in_rounds(scenario: &Scenario) -> anyhow::Result<(Vec<Combination>, Option<Rounds>)> {
    let rounds = if scenario.find_max {
        1
    } else {
        scenario.repeat.max(1)
    };
    let plan = plan(scenario, rounds > 1)?;
    let seed = rounds::order_seed(scenario.seed);
    let combinations: Vec<Combination> = rounds::interleave(plan.len(), rounds, seed)
        .into_iter()
        .map(|(round, index)| {
            let mut combination = plan[index].clone();
            combination.key.round = round;
            combination
        })
        .collect();
    let order = |round: u32| {
        combinations
            .iter()
            .filter(|c| c.key.round == round)
            .map(Combination::label)
            .collect()
    };
    let orders = (rounds > 1).then(|| Rounds {
        seed,
        orders: (0..rounds).map(order).collect(),
        floors: Vec::new(),
    });
    Ok((combinations, orders))
}

/// The plan: every combination the scenario measures, once, in order (payload, workload,
/// fan-out, transport, swept settings), each with its key, every setting its transport takes
/// and the given settings it does not. With `floor_in_every_round`, the floor transport is
/// measured too where the scenario did not select it: rounds pair every row with the floor's
/// row of the same round.
fn plan(scenario: &Scenario, floor_in_every_round: bool) -> anyhow::Result<Vec<Combination>> {
    let mut transports = scenario.transports.clone();
    if floor_in_every_round && !transports.iter().any(|t| t.traits().floor) {
        transports.extend(Transport::ALL.iter().copied().filter(|t| t.traits().floor));
    }
    refuse_foreign_implementations(scenario, &transports)?;
    let mut combinations = Vec::new();
    for payload in &scenario.payloads {
        for &workload in &scenario.workloads {
            for &subscribers in &scenario.subscribers {
                for &transport in &transports {
                    let at = (subscribers, payload, workload);
                    combinations.extend(of_transport(scenario, transport, at)?);
                }
            }
        }
    }
    Ok(combinations)
}

/// Refuses an implementation named for a side that no transport of the run has on that side.
fn refuse_foreign_implementations(
    scenario: &Scenario,
    transports: &[Transport],
) -> anyhow::Result<()> {
    for (setting, server) in [(SERVER_IMPL.name, true), (CLIENT_IMPL.name, false)] {
        for name in scenario.settings.get(setting).into_iter().flatten() {
            let offered = |t: &Transport| {
                let spec = t.spec();
                match server {
                    true => spec.servers.iter().any(|s| s.name == name.as_str()),
                    false => spec.clients.iter().any(|c| c.name == name.as_str()),
                }
            };
            if !transports.iter().any(offered) {
                let names: Vec<String> = transports.iter().map(ToString::to_string).collect();
                anyhow::bail!(
                    "--{setting} {name}: none of {} has it (`pushbench transports` lists each \
                     transport's)",
                    names.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// One transport's combinations at one fan-out, payload and workload: one per variant of the
/// settings swept.
fn of_transport(
    scenario: &Scenario,
    transport: Transport,
    (subscribers, payload, workload): (usize, &PayloadSizes, Workload),
) -> anyhow::Result<Vec<Combination>> {
    let takes = settings_of(transport);
    // Given settings this transport does not take: it runs without them, and its rows say so
    // (the scenario refused any that no transport takes).
    let mut not_applied: Vec<String> = scenario
        .settings
        .keys()
        .filter(|name| !takes.iter().any(|s| s.name() == name.as_str()))
        .cloned()
        .collect();
    let mut combinations = Vec::new();
    let variants = scenario.variants(&takes);
    // A sweep over several transports' implementations (`--server-impl
    // pushbench,tokio-tungstenite,axum-sse`) gives each transport the ones it has. One that
    // has none of those named runs its own, and its rows say so, as for a setting it does not
    // take (`plan` refused any name no transport of the run has).
    let mut own: Vec<_> = variants
        .iter()
        .filter(|(settings, _)| {
            transport.has_implementations(settings) && serves(transport, settings)
        })
        .cloned()
        .collect();
    if own.is_empty() {
        let chosen = [SERVER_IMPL.name, CLIENT_IMPL.name, SERVER.name];
        let named = chosen
            .iter()
            .filter(|n| scenario.settings.contains_key(**n));
        not_applied.extend(named.map(|name| (*name).to_owned()));
        let mut seen = Vec::new();
        for (mut settings, variant) in variants {
            for name in chosen {
                settings.0.remove(name);
            }
            if !seen.contains(&settings) {
                seen.push(settings.clone());
                own.push((settings, variant));
            }
        }
    }
    for (settings, mut variant) in own {
        // The implementations and the server are dimensions of the key, not swept settings.
        for chosen in [SERVER_IMPL.name, CLIENT_IMPL.name, SERVER.name] {
            variant.0.remove(chosen);
        }
        let mut key = RowKey::own(transport, subscribers, payload.clone(), variant);
        key.workload = KeyWorkload::of(&workload);
        with_implementations(&mut key, &settings, &settings)?;
        combinations.push(Combination {
            key,
            workload,
            settings,
            not_applied: not_applied.clone(),
        });
    }
    Ok(combinations)
}

/// Names in `key` the server and client implementations its transport runs with these
/// settings (each side's own, as it reported them).
pub(super) fn with_implementations(
    key: &mut RowKey,
    server_settings: &SettingValues,
    client_settings: &SettingValues,
) -> anyhow::Result<()> {
    let transport = key.transport;
    key.server_impl = transport
        .server_impl(server_settings)
        .map_err(anyhow::Error::msg)?
        .name
        .to_owned();
    key.client_impl = transport
        .client_impl(client_settings)
        .map_err(anyhow::Error::msg)?
        .name
        .to_owned();
    key.server = SERVER.read(server_settings).name().to_owned();
    Ok(())
}

/// Whether the server `settings` name has subscribers of `transport` (pushbench's own has
/// every transport's; a profile, those it lists), with pushbench's own server implementation
/// chosen where it is a profile's (another implementation is another server).
fn serves(transport: Transport, settings: &SettingValues) -> bool {
    match SERVER.read(settings).0 {
        None => true,
        Some(profile) => {
            let own_impl = settings
                .get(&SERVER_IMPL)
                .ok()
                .flatten()
                .is_none_or(|i| i == SERVER_IMPL.default);
            profile.subscription(transport.name()).is_ok() && own_impl
        }
    }
}
