//! Bytes the kernel counted on TCP sockets we do not own the code of (a broker's): each
//! socket's `tcp_info` (`bytes_sent`, `bytes_retrans`, `bytes_received`), read with `ss` from
//! iproute2, which asks the kernel over sock_diag. Where a transport's server is someone
//! else's accept loop, this is how its connections' bytes are counted: on the same sockets,
//! at the same layer (TCP payload, headers of the protocol above included) as
//! [`super::sockets::SocketCounters`] counts ours.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;

/// One TCP socket's addresses and the bytes it carried so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpBytes {
    /// Its local address.
    pub local: SocketAddr,
    /// Its peer's address.
    pub peer: SocketAddr,
    /// Payload bytes sent once (retransmissions not counted again).
    pub sent: u64,
    /// Payload bytes received.
    pub received: u64,
    /// The process holding it, where asked for ([`to_peer_port_from`]).
    pub owner: Option<u32>,
}

/// Every established TCP socket whose local port is `port`, with its bytes.
pub fn on_local_port(port: u16) -> std::io::Result<Vec<TcpBytes>> {
    query(&format!("( sport = :{port} )"), false)
}

/// Every established TCP socket of process `pid` connected to port `port`, with its bytes.
pub fn to_peer_port_from(port: u16, pid: u32) -> std::io::Result<Vec<TcpBytes>> {
    let sockets = query(&format!("( dport = :{port} )"), true)?;
    Ok(sockets
        .into_iter()
        .filter(|s| s.owner == Some(pid))
        .collect())
}

/// The bytes of every connection a server we do not own the code of (a broker, nginx) holds
/// on its port, read while the stream runs (a connection that closes in between keeps what it
/// had at the last reading) and counted once at the end: the subscribers' connections only,
/// the ones this process opened to the server itself (a publisher's) left out.
pub struct WireBytes {
    server: SocketAddr,
    /// Peer ports of connections that are not subscribers' (this process's own).
    excluded: std::collections::HashSet<u16>,
    /// The latest reading of each connection, by its peer address.
    seen: HashMap<SocketAddr, TcpBytes>,
    counters: std::sync::Arc<super::sockets::SocketCounters>,
}

impl WireBytes {
    /// Counts the connections at `server` into `counters`.
    pub fn new(
        server: SocketAddr,
        counters: std::sync::Arc<super::sockets::SocketCounters>,
    ) -> Self {
        Self {
            server,
            excluded: Default::default(),
            seen: HashMap::new(),
            counters,
        }
    }

    /// Leaves out the connection from local port `port` (one this process opened).
    pub fn exclude(&mut self, port: u16) {
        self.excluded.insert(port);
    }

    /// Reads every subscriber connection's bytes now.
    pub fn sample(&mut self) {
        match on_local_port(self.server.port()) {
            Ok(sockets) => {
                for socket in sockets {
                    let ours =
                        socket.local.ip() == self.server.ip() || self.server.ip().is_unspecified();
                    if ours && !self.excluded.contains(&socket.peer.port()) {
                        self.seen.insert(socket.peer, socket);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the server's connections' bytes"),
        }
    }

    /// Adds what was read to the counters, once.
    pub fn count(&mut self) {
        for socket in std::mem::take(&mut self.seen).into_values() {
            self.counters.connection();
            // The server's side: what it sent went out to the subscriber.
            self.counters.wrote(socket.sent as usize);
            self.counters.read(socket.received as usize);
        }
    }
}

/// Runs `ss` with `filter` (and the owning processes, with `owners`) and reads its answer.
fn query(filter: &str, owners: bool) -> std::io::Result<Vec<TcpBytes>> {
    let options = if owners { "-tinpH" } else { "-tinH" };
    let output = Command::new("ss")
        .args([options, "state", "established", filter])
        .output()
        .map_err(|e| std::io::Error::new(e.kind(), format!("running ss (iproute2): {e}")))?;
    if !output.status.success() {
        return Err(std::io::Error::other(format!(
            "ss failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(parse(&String::from_utf8_lossy(&output.stdout)))
}

/// `ss -tinH` output: a line with the queues and addresses per socket (and with `-p`, its
/// `users:(("name",pid=N,fd=M))`), then an indented line of its `tcp_info` as `name:value`
/// words. Sockets whose kernel does not report `bytes_sent`/`bytes_received` (before Linux
/// 4.19) are left out.
fn parse(text: &str) -> Vec<TcpBytes> {
    let mut sockets = Vec::new();
    let mut addresses = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            // Recv-Q, Send-Q, local address, peer address, then the owner.
            let words: Vec<&str> = line.split_whitespace().collect();
            let owner = line
                .split_once("pid=")
                .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|pid| pid.parse().ok());
            addresses = match words.as_slice() {
                [_, _, local, peer, ..] => address(local).zip(address(peer)).map(|a| (a, owner)),
                _ => None,
            };
            continue;
        }
        let Some(((local, peer), owner)) = addresses.take() else {
            continue;
        };
        let fields: HashMap<&str, u64> = line
            .split_whitespace()
            .filter_map(|word| word.split_once(':'))
            .filter_map(|(name, value)| Some((name, value.parse().ok()?)))
            .collect();
        if let (Some(&sent), Some(&received)) =
            (fields.get("bytes_sent"), fields.get("bytes_received"))
        {
            let retransmitted = fields.get("bytes_retrans").copied().unwrap_or(0);
            sockets.push(TcpBytes {
                local,
                peer,
                sent: sent.saturating_sub(retransmitted),
                received,
                owner,
            });
        }
    }
    sockets
}

/// An address as `ss` prints it: `1.2.3.4:80`, `[::1]:80`, or with a `%interface` scope.
fn address(text: &str) -> Option<SocketAddr> {
    let text = match text.split_once('%') {
        // `[fe80::1%eth0]:80` or `10.0.0.1%eth0:80`: the scope goes, the port stays.
        Some((address, rest)) => {
            let port = rest.rsplit_once(':')?.1;
            let address = address.trim_start_matches('[');
            return format!("{address}:{port}")
                .parse()
                .ok()
                .or_else(|| format!("[{address}]:{port}").parse().ok());
        }
        None => text,
    };
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each socket's addresses and bytes, retransmissions taken off, sockets without the
    /// byte counters left out.
    #[test]
    fn reads_sockets_and_their_bytes() {
        let text = "\
0      0      127.0.0.1:1883 127.0.0.1:40000 users:((\"pushbench\",pid=4242,fd=9))
\t cubic wscale:7,7 rto:204 bytes_sent:1500 bytes_retrans:100 bytes_acked:1401 bytes_received:77 segs_out:9
0      0      [::1]:1883 [::1]:40001
\t cubic bytes_sent:10 bytes_received:20
0      0      127.0.0.1:1883 127.0.0.1:40002
\t cubic rto:204 bytes_acked:1
";
        assert_eq!(
            parse(text),
            vec![
                TcpBytes {
                    local: "127.0.0.1:1883".parse().unwrap(),
                    peer: "127.0.0.1:40000".parse().unwrap(),
                    sent: 1400,
                    received: 77,
                    owner: Some(4242),
                },
                TcpBytes {
                    local: "[::1]:1883".parse().unwrap(),
                    peer: "[::1]:40001".parse().unwrap(),
                    sent: 10,
                    received: 20,
                    owner: None,
                },
            ]
        );
    }

    /// Scoped addresses keep their port.
    #[test]
    fn reads_scoped_addresses() {
        assert_eq!(
            address("10.0.0.1%eth0:80"),
            Some("10.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            address("[fe80::1%eth0]:80"),
            Some("[fe80::1]:80".parse().unwrap())
        );
        assert_eq!(address("nonsense"), None);
    }

    /// A real connection's bytes, as the kernel counted them.
    #[test]
    fn counts_a_real_connection() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.write_all(&[7; 1000]).unwrap();
        let mut buffer = [0; 1000];
        client.read_exact(&mut buffer).unwrap();
        client.write_all(&[1; 10]).unwrap();
        server.read_exact(&mut buffer[..10]).unwrap();
        let sockets = on_local_port(port).expect("ss from iproute2 (.ci/run installs it)");
        assert_eq!(sockets.len(), 1, "{sockets:?}");
        assert_eq!((sockets[0].sent, sockets[0].received), (1000, 10));
        // The client's end, found by its process.
        let ours = to_peer_port_from(port, std::process::id()).unwrap();
        assert_eq!(ours.len(), 1, "{ours:?}");
        assert_eq!((ours[0].sent, ours[0].received), (10, 1000));
    }
}
