//! The server's network-namespace link, as `scripts/netns-link` makes it (`run
//! --server-netns NAME`): the packet loss on it, which `run` reads for each row and sets where
//! the row's `packet-loss` setting says, and the bytes that cross it, which count every
//! transport's packets alike (IP, TCP or UDP and QUIC headers, acknowledgements and
//! retransmissions included).
//!
//! The loss is one iptables rule in the namespace's `pushbench-loss` chain, which the link's
//! traffic passes through each way: `statistic --mode random --probability P -j DROP`.

use std::process::Command;

use anyhow::{bail, Context as _};

use crate::settings::{Setting, SettingValues, Side, Value};

/// The chain `scripts/netns-link` routes the link's traffic through each way.
const LOSS_CHAIN: &str = "pushbench-loss";

/// The share of packets the server's link drops, each way, for a row.
pub static PACKET_LOSS: Setting<LinkLoss> = Setting {
    name: "packet-loss",
    help: "The percentage of packets the server's namespace link drops, each way (iptables \
           `statistic` on the link `scripts/netns-link` made; needs --server-netns), set for \
           each row; `link` (the default) keeps the loss the link has",
    side: Side::Harness,
    default: LinkLoss::AsMade,
    min: LinkLoss::AsMade,
};

/// The loss a row's link drops.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub enum LinkLoss {
    /// Whatever the link was made with (none on loopback).
    AsMade,
    /// This percentage, each way.
    Percent(f64),
}

impl Value for LinkLoss {
    const KIND: &'static str = "link|PERCENT";

    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "link" => Ok(LinkLoss::AsMade),
            number => match number.parse::<f64>() {
                Ok(percent) if (0.0..100.0).contains(&percent) => Ok(LinkLoss::Percent(percent)),
                _ => Err(format!(
                    "packet loss {number:?}: expected `link` or a percentage from 0 up to (not \
                     including) 100"
                )),
            },
        }
    }

    fn show(self) -> String {
        match self {
            LinkLoss::AsMade => "link".into(),
            LinkLoss::Percent(percent) => percent.show(),
        }
    }
}

/// One row's link figures: the share of packets the link lost while it ran, and the bytes
/// that crossed it.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkFigures {
    /// The share of packets dropped each way: none on loopback, the namespace link's
    /// (`None`: unknown).
    pub loss: Option<f64>,
    /// Bytes that crossed the namespace's interfaces during the row (`None`: not in one).
    pub bytes: Option<u64>,
    /// The interfaces' count as the row began.
    bytes_before: Option<u64>,
}

impl LinkFigures {
    /// As a row begins: the loss its settings ask for set on the server's namespace link
    /// (`netns`; refused without one), the loss read back, the bytes counted from here.
    pub fn before_row(netns: Option<&str>, settings: &SettingValues) -> anyhow::Result<Self> {
        if let LinkLoss::Percent(percent) = PACKET_LOSS.read(settings) {
            let Some(netns) = netns else {
                bail!(
                    "--packet-loss acts on the server's namespace link: give --server-netns \
                     NAME, a link made by scripts/netns-link up NAME"
                );
            };
            set_loss(netns, percent)?;
        }
        Ok(Self {
            loss: netns.map_or(Some(0.0), loss_of),
            bytes: None,
            bytes_before: netns.and_then(bytes_across),
        })
    }

    /// As the row ends: what crossed since it began.
    pub fn crossed(self, netns: Option<&str>) -> Self {
        let after = netns.and_then(bytes_across);
        Self {
            bytes: after
                .zip(self.bytes_before)
                .map(|(after, before)| after.saturating_sub(before)),
            ..self
        }
    }
}

/// Sets the link of namespace `netns` to drop `percent` of its packets each way.
pub fn set_loss(netns: &str, percent: f64) -> anyhow::Result<()> {
    if !(0.0..100.0).contains(&percent) {
        bail!("--packet-loss {percent}: expected a percentage from 0 up to (not including) 100");
    }
    iptables(netns, &["-F", LOSS_CHAIN]).with_context(|| {
        format!(
            "namespace {netns} has no {LOSS_CHAIN} chain to set the loss in: make its link with \
             scripts/netns-link up {netns}"
        )
    })?;
    if percent > 0.0 {
        let probability = format!("{:.6}", percent / 100.0);
        iptables(
            netns,
            &[
                "-A",
                LOSS_CHAIN,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability,
                "-j",
                "DROP",
            ],
        )?;
    }
    Ok(())
}

/// The share of packets the link of namespace `netns` drops each way now; `None` where it
/// cannot be read (a namespace `scripts/netns-link` did not make).
pub fn loss_of(netns: &str) -> Option<f64> {
    let rules = iptables(netns, &["-S", LOSS_CHAIN]).ok()?;
    Some(
        rules
            .split_whitespace()
            .skip_while(|word| *word != "--probability")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0.0),
    )
}

/// Bytes that crossed namespace `netns`'s interfaces (both ways, loopback aside) since they
/// were made; `None` where they cannot be read.
pub fn bytes_across(netns: &str) -> Option<u64> {
    let output = Command::new("ip")
        .args(["-n", netns, "-j", "-s", "link", "show"])
        .output()
        .ok()?;
    let links: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let mut total = 0;
    for link in links.as_array()? {
        if link["ifname"] == "lo" {
            continue;
        }
        let stats = &link["stats64"];
        total += stats["rx"]["bytes"].as_u64()? + stats["tx"]["bytes"].as_u64()?;
    }
    Some(total)
}

/// Runs iptables inside `netns`, its standard output on success.
fn iptables(netns: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("ip")
        .args(["netns", "exec", netns, "iptables"])
        .args(args)
        .output()
        .context("running iptables in the server's namespace")?;
    if !output.status.success() {
        bail!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `link` keeps the link as made; a percentage from 0 up to 100 sets it; anything else is
    /// refused with what is expected, and each reads back as written.
    #[test]
    fn packet_loss_reads_link_or_a_percentage() {
        assert_eq!(LinkLoss::parse("link"), Ok(LinkLoss::AsMade));
        assert_eq!(LinkLoss::parse(" 1 "), Ok(LinkLoss::Percent(1.0)));
        assert_eq!(LinkLoss::parse("0.5").map(Value::show), Ok("0.5".into()));
        for bad in ["100", "-1", "five", ""] {
            let why = LinkLoss::parse(bad).unwrap_err();
            assert!(
                why.contains("expected `link` or a percentage"),
                "{bad}: {why}"
            );
        }
    }
}
