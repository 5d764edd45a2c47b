//! Bytes the kernel counted on TCP sockets we do not own the code of (a broker's): each
//! socket's `tcp_info` (`bytes_sent`, `bytes_retrans`, `bytes_received`), asked of the kernel
//! over sock_diag netlink (the interface `ss` uses) with the netlink-packet-sock-diag crate.
//! Where a transport's server is someone else's accept loop, this is how its connections'
//! bytes are counted: on the same sockets, at the same layer (TCP payload, headers of the
//! protocol above included) as [`super::sockets::SocketCounters`] counts ours.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

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
}

/// Every established TCP socket whose local port is `port`, with its bytes.
pub fn on_local_port(port: u16) -> io::Result<Vec<TcpBytes>> {
    Ok(established(|socket| socket.source_port == port)?
        .into_iter()
        .map(|(bytes, _)| bytes)
        .collect())
}

/// Every established TCP socket of process `pid` connected to port `port`, with its bytes.
pub fn to_peer_port_from(port: u16, pid: u32) -> io::Result<Vec<TcpBytes>> {
    let held = socket_inodes(pid)?;
    Ok(established(|socket| socket.destination_port == port)?
        .into_iter()
        .filter(|(_, inode)| held.contains(inode))
        .map(|(bytes, _)| bytes)
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

    /// Reads every subscriber connection's bytes now; returns what the server has sent them
    /// in all, as last read (a connection that closed keeps its last reading).
    pub fn sample(&mut self) -> u64 {
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
        self.seen.values().map(|socket| socket.sent).sum()
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

/// Every established TCP socket, IPv4 and IPv6, whose addresses `wanted` keeps: its bytes and
/// its inode. Sockets whose kernel reports no `tcp_info` are left out.
fn established(wanted: impl Fn(&SocketId) -> bool) -> io::Result<Vec<(TcpBytes, u32)>> {
    let mut socket = netlink_sys::Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    let mut found = Vec::new();
    for (family, any) in [
        (AF_INET, SocketId::new_v4()),
        (AF_INET6, SocketId::new_v6()),
    ] {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let request = SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::INFO,
            states: StateFlags::ESTABLISHED,
            socket_id: any,
        });
        let mut message = NetlinkMessage::new(header, request.into());
        message.finalize();
        let mut buffer = vec![0; message.buffer_len()];
        message.serialize(&mut buffer);
        socket.send(&buffer, 0)?;
        dump(&socket, &wanted, &mut found)?;
    }
    Ok(found)
}

/// Reads the kernel's answers to one dump request until it says it is done.
fn dump(
    socket: &netlink_sys::Socket,
    wanted: &impl Fn(&SocketId) -> bool,
    found: &mut Vec<(TcpBytes, u32)>,
) -> io::Result<()> {
    let broken = |why: String| io::Error::other(format!("sock_diag: {why}"));
    loop {
        let (received, _) = socket.recv_from_full()?;
        let mut at = 0;
        // One read holds several messages, one per socket.
        while at < received.len() {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&received[at..])
                .map_err(|e| broken(e.to_string()))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(error) => return Err(broken(error.to_string())),
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response))
                    if wanted(&response.header.socket_id) =>
                {
                    found.extend(bytes_of(&response));
                }
                _ => {}
            }
            if length == 0 {
                break;
            }
            at += length;
        }
    }
}

/// A socket's addresses and bytes, from the kernel's answer about it.
fn bytes_of(response: &InetResponse) -> Option<(TcpBytes, u32)> {
    let id = &response.header.socket_id;
    response.nlas.iter().find_map(|nla| match nla {
        Nla::TcpInfo(info) => Some((
            TcpBytes {
                local: SocketAddr::new(id.source_address, id.source_port),
                peer: SocketAddr::new(id.destination_address, id.destination_port),
                sent: info.bytes_sent.saturating_sub(info.bytes_retrans),
                received: info.bytes_received,
            },
            response.header.inode,
        )),
        _ => None,
    })
}

/// The inodes of the sockets process `pid` holds open, from its file descriptors.
fn socket_inodes(pid: u32) -> io::Result<HashSet<u32>> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        // A descriptor closed while the directory is read is gone, not an error.
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let inode = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u32>().ok());
        inodes.extend(inode);
    }
    Ok(inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real connection's bytes, as the kernel counted them, from both ends.
    #[test]
    fn counts_a_real_connection() {
        use std::io::{Read as _, Write as _};
        for ip in ["127.0.0.1", "::1"] {
            let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
            let port = listener.local_addr().unwrap().port();
            let mut client = std::net::TcpStream::connect((ip, port)).unwrap();
            let (mut server, _) = listener.accept().unwrap();
            server.write_all(&[7; 1000]).unwrap();
            let mut buffer = [0; 1000];
            client.read_exact(&mut buffer).unwrap();
            client.write_all(&[1; 10]).unwrap();
            server.read_exact(&mut buffer[..10]).unwrap();
            let sockets = on_local_port(port).expect("sock_diag");
            assert_eq!(sockets.len(), 1, "{ip}: {sockets:?}");
            assert_eq!((sockets[0].sent, sockets[0].received), (1000, 10), "{ip}");
            assert_eq!(sockets[0].peer, client.local_addr().unwrap(), "{ip}");
            // The client's end, found by its process.
            let ours = to_peer_port_from(port, std::process::id()).unwrap();
            assert_eq!(ours.len(), 1, "{ip}: {ours:?}");
            assert_eq!((ours[0].sent, ours[0].received), (10, 1000), "{ip}");
        }
    }

    /// Another process's sockets are not this one's.
    #[test]
    fn a_process_holds_only_its_own_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _accepted = listener.accept().unwrap();
        assert_eq!(to_peer_port_from(port, 1).unwrap_or_default(), vec![]);
        assert!(
            to_peer_port_from(port, u32::MAX).is_err(),
            "no such process"
        );
    }
}
