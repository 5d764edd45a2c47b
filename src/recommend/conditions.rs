//! The conditions a figure was measured under, and whether they are the design's: a row is
//! evidence for a design only when its workload shape, injected faults, TLS, link, proxy,
//! compression, CPU quota, implementations and server are what the design would run with. A p99 measured
//! through a consumer outage, or with every payload compressed, says nothing about a design
//! that has neither.

use crate::harness::cpu_limit::SERVER_CPU_LIMIT;
use crate::harness::settings::RESTART_AFTER;
use crate::link::netns::{LinkLoss, PACKET_LOSS};
use crate::link::via::{Via, VIA};
use crate::link::LINK;
use crate::results::key::RowKey;
use crate::settings::{Declared, SettingValues, Value};
use crate::transport::client_stream::SLOW_CONSUMER;
use crate::transport::compression::COMPRESSION;
use crate::transport::listener::DROP_EVERY;
use crate::transport::resume::{CHURN, OUTAGE};
use crate::transport::storm::STORM_AFTER;
use crate::transport::tls::TLS;
use crate::transport::upstream::{UPSTREAM_DELAY, UPSTREAM_RATE};

use super::design::{implementations, Design};

/// The injected faults: drops, storms, outages, churn, restarts, a slow consumer, the link
/// emulator. A row cited for a design has none, unless a rule reads what the fault did.
static FAULTS: [&dyn Declared; 8] = [
    &DROP_EVERY,
    &UPSTREAM_DELAY,
    &STORM_AFTER,
    &OUTAGE,
    &CHURN,
    &RESTART_AFTER,
    &SLOW_CONSUMER,
    &LINK,
];

/// What a row must have been measured under to stand for `design`.
#[derive(Clone, Debug)]
pub struct Conditions {
    /// Settings the design fixes, each with the canonical text it must have.
    required: Vec<Required>,
    /// The workload shape's name.
    shape: &'static str,
    /// The implementations the design deploys (pushbench's own where none is named).
    deploys: Vec<String>,
}

/// One setting a row must have had (any of the values wanted).
#[derive(Clone, Debug)]
struct Required {
    setting: &'static dyn Declared,
    wanted: Vec<String>,
    /// An injected fault (not a choice of the design's).
    fault: bool,
}

impl Required {
    /// Whether `settings` had it. One a row's transport does not take was not recorded and
    /// counts as its default (an embedded broker without TLS ran in plain text).
    fn met_by(&self, settings: &SettingValues) -> bool {
        let value = match settings.0.get(self.setting.name()) {
            Some(value) => value.clone(),
            None => self.setting.default_text(),
        };
        self.wanted.contains(&value)
    }
}

/// A row's settings as a design reads them: a transport carried on QUIC, which takes no `tls`
/// setting, was encrypted all the same.
fn always_encrypted(key: &RowKey, settings: &SettingValues) -> SettingValues {
    let mut settings = settings.clone();
    if key.transport.traits().udp {
        settings.0.insert(TLS.name.into(), true.show());
    }
    settings
}

impl Conditions {
    /// The conditions of `design`: no fault, no compression (it trades CPU for bytes, and a
    /// design that did not ask for it pays neither), TLS and a buffering proxy as the design
    /// says.
    pub fn of(design: &Design) -> Self {
        let via = if design.buffering_proxy {
            Via::NginxBuffered
        } else {
            Via::Direct
        };
        let at_default = |setting: &'static dyn Declared, fault| Required {
            setting,
            wanted: vec![setting.default_text()],
            fault,
        };
        let mut required: Vec<Required> = FAULTS.iter().map(|s| at_default(*s, true)).collect();
        required.push(at_default(&COMPRESSION, false));
        // Delivery figures come from one-way rows, for every transport alike: messages up
        // change what a row's latency and CPU measure. A two-way design's messages are judged
        // by the round trip, from two-way rows alone ([`Conditions::two_way`]).
        required.push(at_default(&UPSTREAM_RATE, false));
        for (setting, wanted) in [
            (&TLS as &'static dyn Declared, design.tls.show()),
            (&VIA, via.show()),
        ] {
            required.push(Required {
                setting,
                wanted: vec![wanted],
                fault: false,
            });
        }
        // A design on a lossy network is answered by rows run at its loss; one that loses
        // nothing, by rows at 0% or on a link left as made (loopback, where most runs are).
        let loss = LinkLoss::Percent(design.packet_loss);
        let mut losses = vec![loss.show()];
        if design.packet_loss == 0.0 {
            losses.push(LinkLoss::AsMade.show());
        }
        required.push(Required {
            setting: &PACKET_LOSS,
            wanted: losses,
            fault: false,
        });
        // A CPU quota changes latency and what a row could deliver: a row ran under none, or
        // under the design's own CPU budget (its own run, unscaled).
        let mut quotas = vec![SERVER_CPU_LIMIT.default_text()];
        quotas.extend(design.cpu_cores.map(|cores| cores.show()));
        required.push(Required {
            setting: &SERVER_CPU_LIMIT,
            wanted: quotas,
            fault: false,
        });
        Self {
            required,
            shape: design.workload.name(),
            deploys: design.deploys.clone(),
        }
    }

    /// The same conditions for a two-way figure (the round trip): any rate of messages up.
    pub fn two_way(mut self) -> Self {
        self.required
            .retain(|r| r.setting.name() != UPSTREAM_RATE.name);
        self
    }

    /// Whether a row with `key`, run with `settings`, was measured under these conditions.
    pub fn admit(&self, key: &RowKey, settings: &SettingValues) -> bool {
        let settings = &always_encrypted(key, settings);
        self.admit_key(key) && self.required.iter().all(|r| r.met_by(settings))
    }

    /// As [`Conditions::admit`], with any injected fault allowed: for the rules that read
    /// what a fault did (loss across a measured outage).
    pub fn admit_faulted(&self, key: &RowKey, settings: &SettingValues) -> bool {
        let settings = &always_encrypted(key, settings);
        self.admit_key(key)
            && self
                .required
                .iter()
                .filter(|r| !r.fault)
                .all(|r| r.met_by(settings))
    }

    /// Whether the key alone fits: the design's workload shape, the implementations it
    /// deploys (pushbench's own where it names none) and pushbench's own server (stepped-rate
    /// figures carry no settings).
    pub fn admit_key(&self, key: &RowKey) -> bool {
        key.workload.shape.name() == self.shape
            && implementations(&self.deploys, key.transport)
                == [&key.server_impl, &key.client_impl, &key.server]
    }
}
