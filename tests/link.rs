//! The link a server can be put behind (`scripts/netns-link`): what it plants reads in what
//! crosses it.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::BIN;

/// Ping-pongs timed, after as many again untimed to warm up.
const ROUND_TRIPS: usize = 20;

/// One link at a time: every link takes the same addresses (10.200.0.1 and .2).
static ONE_LINK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A planted 25 ms each way on the link's packet path (`scripts/netns-link --delay`: iptables
/// queues every packet to `pushbench delay`, which holds it) reads as a 50 ms round trip,
/// within 1 ms: the median of 20 TCP ping-pongs of 64 bytes between this namespace and
/// `pushbench echo` inside the link's. Needs root, ip netns and iptables: `scripts/test` runs
/// it where they work.
#[test]
#[ignore = "needs root, ip netns and iptables (scripts/test runs it where allowed)"]
fn a_planted_delay_reads_in_the_round_trip() {
    let _link = ONE_LINK.lock().unwrap_or_else(|e| e.into_inner());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/netns-link");
    let up = Command::new(script)
        .args(["up", "pbdelay", "--delay", "25ms"])
        .env("PUSHBENCH", BIN)
        .status()
        .unwrap();
    assert!(up.success(), "scripts/netns-link up failed");
    let timed = std::panic::catch_unwind(|| round_trips("pbdelay"));
    let _ = Command::new(script).args(["down", "pbdelay"]).status();
    let mut timed = timed.unwrap();
    timed.sort();
    let median = timed[timed.len() / 2];
    eprintln!("median round trip across 25 ms each way: {median:?}");
    let off = median.abs_diff(Duration::from_millis(50));
    assert!(
        off <= Duration::from_millis(1),
        "median round trip {median:?}, not 50 ms within 1 ms: {timed:?}"
    );
}

/// WebTransport's datagrams through a link that loses packets: at 0% loss nothing is dropped;
/// at 5% (set for the row by `run --packet-loss`, each way) the ledger is exact, every event
/// delivered or counted dropped, nothing twice, and the drops within the binomial bound of the
/// link's loss, so the row passes; the bytes that crossed the link are counted for both rows.
#[test]
#[ignore = "needs root, ip netns and iptables (scripts/test runs it where allowed)"]
fn datagrams_drop_what_the_link_loses_and_no_more() {
    let _link = ONE_LINK.lock().unwrap_or_else(|e| e.into_inner());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/netns-link");
    let up = Command::new(script)
        .args(["up", "pbdrop"])
        .env("PUSHBENCH", BIN)
        .status()
        .unwrap();
    assert!(up.success(), "scripts/netns-link up failed");
    let out = common::scratch("datagrams-drop");
    let run = Command::new(BIN)
        .args([
            "run",
            "--server-netns",
            "pbdrop",
            "--transports",
            "webtransport",
        ])
        .args(["--webtransport-mode", "datagrams", "--packet-loss", "0,5"])
        .args(["--subscribers", "4", "--events", "4000", "--rate", "1000"])
        .arg("--out")
        .arg(&*out)
        .output()
        .unwrap();
    let _ = Command::new(script).args(["down", "pbdrop"]).status();
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "run failed: {said}");
    let results = results_in(&out);
    let rows = results["runs"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let loss = row["settings"]["packet-loss"].as_str().unwrap().to_owned();
        let (expected, delivered, dropped) = (
            row["events_expected"].as_u64().unwrap(),
            row["events_delivered"].as_u64().unwrap(),
            row["dropped"].as_u64().unwrap(),
        );
        eprintln!("packet-loss {loss}%: {delivered} delivered, {dropped} dropped of {expected}");
        assert_eq!(row["failed"], false, "{loss}%: {}", row["error"]);
        assert_eq!(delivered + dropped, expected, "{loss}%: the ledger");
        assert_eq!(row["duplicated"], 0, "{loss}%");
        assert!(row["connection"]["link_bytes_per_event"].as_f64().unwrap() > 0.0);
        match loss.as_str() {
            "0" => assert_eq!(dropped, 0),
            _ => assert!(dropped > 0, "5% loss dropped nothing"),
        }
    }
}

/// The results of the one run written under `dir`, as JSON.
fn results_in(dir: &std::path::Path) -> serde_json::Value {
    let file = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("results.json"))
        .find(|p| p.exists())
        .expect("a run's results.json");
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

/// Round trips of 64 bytes with `pushbench echo` run inside `netns`, at the link's far end.
fn round_trips(netns: &str) -> Vec<Duration> {
    let mut echo = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            BIN,
            "echo",
            "--listen",
            "10.200.0.2:0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(echo.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (ping, mut pong) = ([7u8; 64], [0u8; 64]);
    let mut timed = Vec::new();
    for i in 0..ROUND_TRIPS * 2 {
        let start = Instant::now();
        stream.write_all(&ping).unwrap();
        stream.read_exact(&mut pong).unwrap();
        if i >= ROUND_TRIPS {
            timed.push(start.elapsed());
        }
    }
    drop(stream);
    let _ = echo.wait();
    timed
}
