//! Length-prefixed frames, the framing of raw TCP and of WebTransport's one stream per
//! subscriber: a 4-byte big-endian length, then the message (an event's JSON, a gap, a copy of
//! a message sent up). The server frames a batch into one buffer ([`frame`]); the client reads
//! frames in large chunks into one reused buffer and decodes them where they lie
//! ([`FrameBuffer`]).

use bytes::{BufMut as _, BytesMut};
use tokio::io::AsyncReadExt as _;

use crate::event::MAX_EVENT_BYTES;
use crate::hub::Batch;

/// Bytes the client asks the kernel for per read at first: small, so an idle subscriber costs
/// little memory...
pub(crate) const FIRST_CHUNK: usize = 4 * 1024;

/// ...growing (doubling whenever a read fills it) to this, so a backlog of small frames costs
/// one system call per ~450 events rather than one per event.
const READ_CHUNK: usize = 64 * 1024;

/// Bytes of the length prefix before each frame.
pub(crate) const PREFIX_BYTES: usize = 4;

/// A batch as length-prefixed frames (a gap first, copies of messages sent up last): a 4-byte
/// big-endian length, then the event's JSON.
pub(crate) fn frame(batch: &Batch, out: &mut BytesMut) {
    let size: usize = batch.events.iter().map(|e| e.len() + 4).sum();
    out.reserve(size);
    if let Some(gap) = batch.gap {
        let gap = gap.encode();
        out.put_u32(gap.len() as u32);
        out.extend_from_slice(&gap);
    }
    for (_, event) in batch.iter() {
        // Encoded events are bounded by MAX_EVENT_BYTES, far below u32::MAX.
        out.put_u32(event.len() as u32);
        out.extend_from_slice(event);
    }
    // Copies of messages sent up, after the events, in the same frames.
    for copy in &batch.copies {
        out.put_u32(copy.len() as u32);
        out.extend_from_slice(copy);
    }
}

/// Length-prefixed frames read in large chunks into one buffer that is reused, not
/// reallocated: frames are handed out as slices of it.
#[derive(Default)]
pub(crate) struct FrameBuffer {
    bytes: Vec<u8>,
    /// How much one read asks for now.
    chunk: usize,
    /// Start of the first unread byte.
    start: usize,
    /// End of the bytes read so far.
    end: usize,
}

impl FrameBuffer {
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Reads more bytes, first moving what is left to the front (and growing only when one
    /// frame is larger than the buffer).
    pub(crate) async fn read_from(
        &mut self,
        stream: &mut (impl tokio::io::AsyncRead + Unpin),
    ) -> std::io::Result<usize> {
        if self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.chunk = self.chunk.max(FIRST_CHUNK);
        let wanted = match self.pending_frame_len() {
            Some(len) => (PREFIX_BYTES + len).max(self.end + self.chunk),
            None => self.end + self.chunk,
        };
        if self.bytes.len() < wanted {
            self.bytes.resize(wanted, 0);
        }
        let free = self.bytes.len() - self.end;
        let n = stream.read(&mut self.bytes[self.end..]).await?;
        self.end += n;
        if n == free {
            // The kernel had more than we asked for: ask for more next time.
            self.chunk = (self.chunk * 2).min(READ_CHUNK);
        }
        Ok(n)
    }

    /// The length announced by the next frame's prefix, if the prefix has arrived.
    fn pending_frame_len(&self) -> Option<usize> {
        let prefix = self.bytes.get(self.start..self.start + PREFIX_BYTES)?;
        (self.end - self.start >= PREFIX_BYTES)
            .then(|| u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize)
    }

    /// The next whole frame, `None` until one has arrived, or the announced length if it is
    /// larger than any event.
    pub(crate) fn next_frame(&mut self) -> Result<Option<&[u8]>, usize> {
        let Some(len) = self.pending_frame_len() else {
            return Ok(None);
        };
        if len > MAX_EVENT_BYTES {
            return Err(len);
        }
        let begin = self.start + PREFIX_BYTES;
        if self.end - begin < len {
            return Ok(None);
        }
        self.start = begin + len;
        Ok(Some(&self.bytes[begin..begin + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    /// Frames come out whole whatever the read boundaries, including across a buffer wrap and
    /// a frame larger than one read.
    #[tokio::test]
    async fn frames_survive_any_split() {
        let payloads: Vec<Vec<u8>> = vec![
            b"a".to_vec(),
            vec![b'x'; 100_000],
            Vec::new(),
            b"end".to_vec(),
        ];
        let mut wire = Vec::new();
        for p in &payloads {
            wire.extend_from_slice(&(p.len() as u32).to_be_bytes());
            wire.extend_from_slice(p);
        }
        for chunk in [1, 3, 7, 4096, wire.len()] {
            let (mut tx, mut rx) = tokio::io::duplex(chunk);
            let sent = wire.clone();
            let writer = tokio::spawn(async move {
                for piece in sent.chunks(chunk) {
                    tx.write_all(piece).await.unwrap();
                }
            });
            let mut buffer = FrameBuffer::default();
            let mut got = Vec::new();
            while got.len() < payloads.len() {
                assert!(buffer.read_from(&mut rx).await.unwrap() > 0);
                while let Some(frame) = buffer.next_frame().unwrap() {
                    got.push(frame.to_vec());
                }
            }
            writer.await.unwrap();
            assert_eq!(got, payloads, "reads of {chunk} bytes");
        }
    }

    /// A prefix announcing more than any event is refused with its length.
    #[test]
    fn oversized_prefix_is_refused() {
        let mut buffer = FrameBuffer {
            bytes: u32::MAX.to_be_bytes().to_vec(),
            end: 4,
            ..FrameBuffer::default()
        };
        assert_eq!(buffer.next_frame(), Err(u32::MAX as usize));
    }
}
