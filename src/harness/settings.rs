//! The settings `run` acts on itself, around a transport rather than inside it: the link
//! emulator, a reverse proxy in the path, the server restart fault and a CPU limit on the
//! server. The harness declares
//! them here, each with the rule for which transports it applies to (read from what a
//! transport declares), so no transport's `SPEC` lists them and the transport layer never
//! names the layers above it.

use std::time::Duration;

use crate::link::netns::PACKET_LOSS;
use crate::link::via::VIA;
use crate::link::LINK;

use super::cpu_limit::SERVER_CPU_LIMIT;
use crate::settings::{Declared, Setting, Side};
use crate::transport::listener::DROP_EVERY;
use crate::transport::{Spec, Transport};

/// The server restart fault: when `run` kills the server.
pub static RESTART_AFTER: Setting<Duration> = Setting {
    name: "restart-after",
    help: "Fault: `run` kills the server process this long after the stream starts and starts \
           a new one on the same port, which serves the same stream on the same schedule; \
           subscribers resume from it (0s: never)",
    side: Side::Harness,
    default: Duration::ZERO,
    min: Duration::ZERO,
};

/// One setting of the harness's and the transports it applies to.
pub struct HarnessSetting {
    /// The setting.
    pub setting: &'static dyn Declared,
    /// Whether it applies to a transport, from what the transport declares.
    pub applies: fn(&Spec) -> bool,
}

/// Subscribers dial the server's one address and resume after a cut (what taking the drop
/// fault declares): a proxy can stand in the path, and a restarted server is resumed from.
fn dials_and_resumes(spec: &Spec) -> bool {
    spec.takes(&DROP_EVERY)
}

/// As [`dials_and_resumes`], over HTTP/1.1 (nginx proxies HTTP/1.1 upstreams, not h2c).
fn dials_http1(spec: &Spec) -> bool {
    dials_and_resumes(spec) && spec.traits.http && !spec.traits.multiplexed
}

/// The harness's settings, in the order they follow a transport's own.
pub static HARNESS_SETTINGS: &[HarnessSetting] = &[
    HarnessSetting {
        setting: &VIA,
        applies: dials_http1,
    },
    HarnessSetting {
        setting: &RESTART_AFTER,
        applies: dials_and_resumes,
    },
    HarnessSetting {
        setting: &LINK,
        applies: over_tcp,
    },
    HarnessSetting {
        setting: &SERVER_CPU_LIMIT,
        applies: every_transport,
    },
    HarnessSetting {
        setting: &PACKET_LOSS,
        applies: every_transport,
    },
];

/// A transport whose connections are TCP, which the link emulator (a TCP proxy) can stand in
/// (subscribers dial the server or its broker, or the server dials their endpoints); QUIC's
/// go around it (its loss and delay are the namespace link's, `scripts/netns-link`).
fn over_tcp(spec: &Spec) -> bool {
    !spec.traits.udp
}

/// Every transport: each server can be limited, and the packets of each can be lost.
fn every_transport(_: &Spec) -> bool {
    true
}

/// Every setting a run of `transport` takes: its own (with its choice of implementation),
/// then the harness's that apply to it.
pub fn settings_of(transport: Transport) -> Vec<&'static dyn Declared> {
    let spec = transport.spec();
    let mut settings = transport.settings();
    settings.extend(
        HARNESS_SETTINGS
            .iter()
            .filter(|h| (h.applies)(spec))
            .map(|h| h.setting),
    );
    settings
}

/// Every declared setting once, the transports' then the harness's, with the transports that
/// take it: what the flags, scenario keys and `pushbench transports` list.
pub fn declared_settings() -> Vec<(&'static dyn Declared, Vec<Transport>)> {
    let mut declared = crate::transport::declared_settings();
    for harness in HARNESS_SETTINGS {
        let takers = Transport::ALL
            .iter()
            .copied()
            .filter(|t| (harness.applies)(t.spec()))
            .collect();
        declared.push((harness.setting, takers));
    }
    declared
}

/// The declared setting (a transport's or the harness's) with this name.
pub fn setting_named(name: &str) -> Option<&'static dyn Declared> {
    crate::transport::setting_named(name).or_else(|| {
        HARNESS_SETTINGS
            .iter()
            .map(|h| h.setting)
            .find(|s| s.name() == name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness's settings reach the transports whose subscribers dial the server, and
    /// only them: webhooks (the server dials its consumers) take none of them, the reverse
    /// proxy stays off multiplexed HTTP/2, and the link emulator (a TCP proxy) off QUIC; every
    /// transport's packets can be lost.
    #[test]
    fn harness_settings_follow_what_transports_declare() {
        for &transport in Transport::ALL {
            let spec = transport.spec();
            let names: Vec<&str> = settings_of(transport).iter().map(|s| s.name()).collect();
            let dials = spec.takes(&DROP_EVERY);
            assert_eq!(names.contains(&LINK.name), !spec.traits.udp, "{transport}");
            assert!(names.contains(&PACKET_LOSS.name), "{transport}");
            assert_eq!(names.contains(&RESTART_AFTER.name), dials, "{transport}");
            if spec.traits.multiplexed || spec.traits.needs_inbound_http {
                assert!(!names.contains(&VIA.name), "{transport}");
            }
        }
        assert!(setting_named("restart-after").is_some());
        assert!(setting_named("no-such-setting").is_none());
    }
}
