//! The kernel's packet queue (iptables' `NFQUEUE` target) over netlink: bind to a queue, take
//! the id of each packet queued to it, and let packets through. The messages are framed by
//! netlink-packet-core and netlink-packet-utils on netlink-sys's socket, as `tcp_info`'s are;
//! only what a delay needs is here.
//!
//! Why not the `nfq` crate: it gives no descriptor to wait on, so a process holding packets
//! for a set time could only poll it in a loop, and a packet's arrival would be seen late by
//! up to the polling interval.

use std::io;
use std::os::fd::AsFd as _;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_utils::nla::{DefaultNla, Nla as _, NlasIterator};
use netlink_packet_utils::traits::{Emitable as _, Parseable as _};
use netlink_packet_utils::DecodeError;
use netlink_sys::protocols::NETLINK_NETFILTER;

/// nfnetlink's subsystem for the packet queue (`NFNL_SUBSYS_QUEUE`).
const SUBSYSTEM: u16 = 3;
/// Message types within it (`enum nfqnl_msg_types`).
const MSG_PACKET: u16 = 0;
const MSG_CONFIG: u16 = 2;
const MSG_VERDICT_BATCH: u16 = 3;
/// Configuration attributes (`enum nfqnl_attr_config`).
const CFG_CMD: u16 = 1;
const CFG_PARAMS: u16 = 2;
const CFG_QUEUE_MAXLEN: u16 = 3;
/// `NFQNL_CFG_CMD_BIND`.
const CMD_BIND: u8 = 1;
/// `NFQNL_COPY_META`: a packet's metadata only, never its bytes.
const COPY_META: u8 = 1;
/// Packet attributes (`enum nfqnl_attr_type`).
const PACKET_HDR: u16 = 1;
const VERDICT_HDR: u16 = 2;
/// `NF_ACCEPT`.
const ACCEPT: u32 = 1;
/// The room one read has: a queued packet's message, metadata only, is under 200 bytes.
const READ_ROOM: usize = 64 * 1024;
/// The socket's receive buffer: while the holder sleeps, the kernel's messages about newly
/// queued packets wait here, and one that does not fit costs its packet.
const RECEIVE_BUFFER: usize = 8 * 1024 * 1024;

/// A message of the packet queue's subsystem: its type, the queue it is about and its
/// attributes, after nfnetlink's own header (family, version, queue number).
#[derive(Debug)]
struct QueueMessage {
    kind: u16,
    queue: u16,
    attributes: Vec<DefaultNla>,
}

impl NetlinkSerializable for QueueMessage {
    fn message_type(&self) -> u16 {
        (SUBSYSTEM << 8) | self.kind
    }

    fn buffer_len(&self) -> usize {
        4 + self.attributes.as_slice().buffer_len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        // AF_UNSPEC, NFNETLINK_V0, then the queue number, big-endian.
        buffer[..2].copy_from_slice(&[0, 0]);
        buffer[2..4].copy_from_slice(&self.queue.to_be_bytes());
        self.attributes.as_slice().emit(&mut buffer[4..]);
    }
}

impl NetlinkDeserializable for QueueMessage {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        let (Some(queue), Some(attributes)) = (payload.get(2..4), payload.get(4..)) else {
            return Err(DecodeError::from("a queue message shorter than its header"));
        };
        let attributes = NlasIterator::new(attributes)
            .map(|nla| DefaultNla::parse(&nla?))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            kind: header.message_type & 0xff,
            queue: u16::from_be_bytes([queue[0], queue[1]]),
            attributes,
        })
    }
}

/// One NFQUEUE queue, bound by this process: every packet iptables sends it waits here until
/// it is let through.
pub struct PacketQueue {
    socket: netlink_sys::Socket,
    queue: u16,
    room: Vec<u8>,
}

impl PacketQueue {
    /// Binds queue number `queue`, its packets' metadata only, the kernel holding at most
    /// `max_held` of them (past that it drops what comes).
    pub fn bind(queue: u16, max_held: u32) -> io::Result<Self> {
        let mut socket = netlink_sys::Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        socket.set_rx_buf_sz(RECEIVE_BUFFER)?;
        let mut bound = Self {
            socket,
            queue,
            room: Vec::with_capacity(READ_ROOM),
        };
        bound.configure(vec![DefaultNla::new(
            CFG_CMD,
            vec![CMD_BIND, 0, 0, 0], // the command, padding, and an unused family
        )])?;
        let mut params = 0u32.to_be_bytes().to_vec(); // copy range: no bytes
        params.push(COPY_META);
        bound.configure(vec![
            DefaultNla::new(CFG_PARAMS, params),
            DefaultNla::new(CFG_QUEUE_MAXLEN, max_held.to_be_bytes().to_vec()),
        ])?;
        bound.socket.set_non_blocking(true)?;
        Ok(bound)
    }

    /// Sends a configuration message and waits for the kernel's acknowledgement.
    fn configure(&mut self, attributes: Vec<DefaultNla>) -> io::Result<()> {
        self.send(MSG_CONFIG, attributes, NLM_F_REQUEST | NLM_F_ACK)?;
        loop {
            let (received, _) = self.socket.recv_from_full()?;
            for message in messages(&received) {
                if let NetlinkPayload::Error(error) = message?.payload {
                    return match error.code {
                        None => Ok(()),
                        Some(_) => Err(error.to_io()),
                    };
                }
            }
        }
    }

    fn send(&self, kind: u16, attributes: Vec<DefaultNla>, flags: u16) -> io::Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        let body = QueueMessage {
            kind,
            queue: self.queue,
            attributes,
        };
        let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(body));
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        Ok(())
    }

    /// Hands `each` the id of every packet queued since the last call, in the order they were
    /// queued; returns once none is waiting.
    pub fn take_queued(&mut self, mut each: impl FnMut(u32)) -> io::Result<()> {
        loop {
            self.room.clear();
            match self.socket.recv(&mut self.room, 0) {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                // The receive buffer overflowed: the kernel dropped those packets (counted
                // as the link's loss would be); the queue carries on.
                Err(error)
                    if error.raw_os_error() == Some(rustix::io::Errno::NOBUFS.raw_os_error()) =>
                {
                    continue
                }
                Err(error) => return Err(error),
            }
            for message in messages(&self.room) {
                if let NetlinkPayload::InnerMessage(packet) = message?.payload {
                    if let Some(id) = packet_id(&packet) {
                        each(id);
                    }
                }
            }
        }
    }

    /// Lets through every packet still queued whose id is at most `last` (ids rise in the
    /// order packets are queued).
    pub fn accept_through(&self, last: u32) -> io::Result<()> {
        let mut verdict = ACCEPT.to_be_bytes().to_vec();
        verdict.extend_from_slice(&last.to_be_bytes());
        let attributes = vec![DefaultNla::new(VERDICT_HDR, verdict)];
        self.send(MSG_VERDICT_BATCH, attributes, NLM_F_REQUEST)
    }

    /// Sleeps until a packet is queued or `timeout` passes (with none, until a packet is).
    /// `true` when the time passed with nothing queued.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let fd = self.socket.as_fd();
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = timeout.map(|wait| rustix::time::Timespec {
            tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(wait.subsec_nanos()),
        });
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(ready) => Ok(ready == 0),
            Err(rustix::io::Errno::INTR) => Ok(false),
            Err(errno) => Err(errno.into()),
        }
    }
}

impl From<QueueMessage> for NetlinkPayload<QueueMessage> {
    fn from(message: QueueMessage) -> Self {
        NetlinkPayload::InnerMessage(message)
    }
}

/// The netlink messages one read holds, in order.
fn messages(
    received: &[u8],
) -> impl Iterator<Item = io::Result<NetlinkMessage<QueueMessage>>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let rest = received.get(at..).filter(|rest| !rest.is_empty())?;
        match NetlinkMessage::<QueueMessage>::deserialize(rest) {
            Ok(message) => {
                // Each message starts on a 4-byte boundary; a zero length would never end.
                let length = (message.header.length as usize + 3) & !3;
                at = if length == 0 {
                    received.len()
                } else {
                    at + length
                };
                Some(Ok(message))
            }
            Err(error) => {
                at = received.len();
                Some(Err(io::Error::other(format!("nfqueue: {error}"))))
            }
        }
    })
}

/// A queued packet's id, from its packet header (id, hardware protocol, hook).
fn packet_id(message: &QueueMessage) -> Option<u32> {
    if message.kind != MSG_PACKET {
        return None;
    }
    let header = message
        .attributes
        .iter()
        .find(|nla| nla.kind() == PACKET_HDR)?;
    let mut value = vec![0; header.value_len()];
    header.emit_value(&mut value);
    Some(u32::from_be_bytes(value.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_packet_ids_are_read() {
        // A packet message as the kernel sends it: its header attribute carries the id.
        let mut packet_header = 7_000_001u32.to_be_bytes().to_vec();
        packet_header.extend_from_slice(&[0x08, 0x00, 3]); // IPv4, the hook
        let packet = QueueMessage {
            kind: MSG_PACKET,
            queue: 4,
            attributes: vec![DefaultNla::new(PACKET_HDR, packet_header)],
        };
        let mut message = NetlinkMessage::new(NetlinkHeader::default(), packet.into());
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        // Two in one read, as the kernel batches them.
        let twice = [bytes.clone(), bytes].concat();
        let read: Vec<_> = messages(&twice).collect::<io::Result<_>>().unwrap();
        assert_eq!(read.len(), 2);
        for message in read {
            let NetlinkPayload::InnerMessage(packet) = message.payload else {
                panic!("not a queue message: {message:?}");
            };
            assert_eq!(packet.queue, 4);
            assert_eq!(packet_id(&packet), Some(7_000_001));
        }
        // Truncated bytes are an error, not a panic or a loop.
        let broken: Vec<_> = messages(&twice[..10]).collect();
        assert!(broken.iter().all(Result::is_err), "{broken:?}");
    }
}
