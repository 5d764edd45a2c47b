//! Compression of what reaches subscribers, as a measured option (`--compression`): the
//! setting, HTTP content codings (`gzip`, `deflate`) for whole bodies and for a streamed
//! response, and the decoders the clients read them with. WebSocket's permessage-deflate is
//! negotiated by its library; its transport maps the setting onto it.
//!
//! Compression happens per connection wherever the bytes differ per subscriber (an SSE stream,
//! a poll answer, a WebSocket message stream), so the hub's one shared encoding of each event
//! is compressed again for every subscriber: that cost is what the option measures. A webhook
//! body is the same for every endpoint and is compressed once per event.

use std::io::{self, Write as _};

use axum::http::{header, HeaderMap, HeaderValue};
use bytes::Bytes;
use flate2::write::{GzDecoder, GzEncoder, ZlibDecoder, ZlibEncoder};
use futures_util::{Stream, StreamExt as _};

use super::{Setting, Side, Traits};
use crate::settings::Value;

/// Whether and how what goes to subscribers is compressed.
pub static COMPRESSION: Setting<Compression> = Setting {
    name: "compression",
    help: "Compress what goes to subscribers: deflate (WebSocket permessage-deflate, HTTP \
           Content-Encoding: deflate) or gzip (HTTP only: SSE streams, poll answers, webhook \
           bodies), level 6; per connection, except webhook bodies (once per event)",
    side: Side::Both,
    default: Compression::Off,
    min: Compression::Off,
};

/// The compression level everywhere (zlib's default, and the ws and browser servers' usual).
const LEVEL: flate2::Compression = flate2::Compression::new(6);

/// The most one decoding may produce: a bound on what a small compressed input can make a
/// client allocate (a decompression bomb), far above any batch of events.
pub const MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;

/// Input fed to a decoder at a time, so output is checked against the bound before it can
/// grow past it by more than DEFLATE's largest expansion of one slice (about 1032:1).
const DECODE_SLICE: usize = 256;

/// A compression choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd)]
pub enum Compression {
    /// Nothing compressed.
    Off,
    /// DEFLATE: permessage-deflate on WebSocket, zlib-wrapped (`Content-Encoding: deflate`)
    /// over HTTP.
    Deflate,
    /// gzip-wrapped DEFLATE (`Content-Encoding: gzip`), HTTP only.
    Gzip,
}

impl Value for Compression {
    const KIND: &'static str = "off|deflate|gzip";

    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "off" => Ok(Compression::Off),
            "deflate" => Ok(Compression::Deflate),
            "gzip" => Ok(Compression::Gzip),
            other => Err(format!(
                "unknown compression {other:?}: expected off, deflate or gzip"
            )),
        }
    }

    fn show(self) -> String {
        self.coding().unwrap_or("off").to_owned()
    }
}

impl Compression {
    /// Its HTTP content-coding token, or `None` when off.
    pub fn coding(self) -> Option<&'static str> {
        match self {
            Compression::Off => None,
            Compression::Deflate => Some("deflate"),
            Compression::Gzip => Some("gzip"),
        }
    }

    /// The coding a response is compressed with: this one, if the request's `Accept-Encoding`
    /// accepts it (a server compresses only what its client said it can read).
    pub fn for_request(self, request: &HeaderMap) -> Compression {
        let Some(coding) = self.coding() else {
            return Compression::Off;
        };
        let accepted = request
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|item| {
                let mut parts = item.split(';').map(str::trim);
                let token = parts.next().unwrap_or_default();
                // `q=0` means "not this one".
                let refused = parts.any(|p| p.strip_prefix("q=").is_some_and(is_zero_q));
                token.eq_ignore_ascii_case(coding) && !refused
            });
        if accepted {
            self
        } else {
            Compression::Off
        }
    }

    /// The `Accept-Encoding` a client sends, if it wants this coding.
    pub fn accept_encoding(self) -> Option<(&'static str, &'static str)> {
        self.coding().map(|coding| ("accept-encoding", coding))
    }

    /// The `Content-Encoding` header of a body compressed this way.
    pub fn content_encoding(self) -> Option<(header::HeaderName, HeaderValue)> {
        self.coding()
            .map(|coding| (header::CONTENT_ENCODING, HeaderValue::from_static(coding)))
    }

    /// `body` compressed as one whole (a poll answer, a webhook body); unchanged when off.
    pub fn compress(self, body: Bytes) -> Bytes {
        match self.encoder() {
            Some(encoder) => encoder.finish_with(&body),
            None => body,
        }
    }

    /// Whether a transport with these traits can compress this way: one that upgrades to a
    /// framing of its own (WebSocket) has permessage-deflate, and no HTTP content coding.
    pub fn offered_by(self, traits: &Traits) -> Result<(), String> {
        if self == Compression::Gzip && traits.needs_upgrade {
            return Err(
                "it compresses with permessage-deflate only: use --compression deflate \
                        (gzip is an HTTP content coding)"
                    .into(),
            );
        }
        Ok(())
    }

    /// An encoder for a streamed body (an SSE response), or `None` when off.
    pub fn encoder(self) -> Option<StreamEncoder> {
        match self {
            Compression::Off => None,
            Compression::Deflate => Some(StreamEncoder::Zlib(ZlibEncoder::new(Vec::new(), LEVEL))),
            Compression::Gzip => Some(StreamEncoder::Gzip(GzEncoder::new(Vec::new(), LEVEL))),
        }
    }
}

fn is_zero_q(q: &str) -> bool {
    q.parse::<f32>().is_ok_and(|q| q == 0.0)
}

/// One compressed stream across a response's chunks: every chunk is flushed (a sync flush) so
/// the client can decode it at once, and the window carries over, as an HTTP server's
/// compression of a streamed response does.
pub enum StreamEncoder {
    /// `Content-Encoding: deflate`.
    Zlib(ZlibEncoder<Vec<u8>>),
    /// `Content-Encoding: gzip`.
    Gzip(GzEncoder<Vec<u8>>),
}

impl StreamEncoder {
    /// `data` compressed and flushed: everything the client needs to decode it.
    pub fn chunk(&mut self, data: &[u8]) -> Bytes {
        // Writing to memory cannot fail.
        let out = match self {
            StreamEncoder::Zlib(encoder) => {
                let _ = encoder.write_all(data).and_then(|()| encoder.flush());
                encoder.get_mut()
            }
            StreamEncoder::Gzip(encoder) => {
                let _ = encoder.write_all(data).and_then(|()| encoder.flush());
                encoder.get_mut()
            }
        };
        Bytes::from(std::mem::take(out))
    }

    /// The stream's end (the final block and the coding's trailer).
    pub fn finish(self) -> Bytes {
        self.finish_with(&[])
    }

    /// `data`, then the stream's end: a whole body without a flush in the middle.
    pub fn finish_with(self, data: &[u8]) -> Bytes {
        // Writing to memory cannot fail.
        let out = match self {
            StreamEncoder::Zlib(mut encoder) => {
                let _ = encoder.write_all(data);
                encoder.finish()
            }
            StreamEncoder::Gzip(mut encoder) => {
                let _ = encoder.write_all(data);
                encoder.finish()
            }
        };
        Bytes::from(out.unwrap_or_default())
    }
}

/// A streamed body's chunks compressed by `encoder`, each flushed as it goes, the stream's end
/// appended after the last; unchanged without an encoder.
pub fn compressed<S, E>(
    chunks: S,
    encoder: Option<StreamEncoder>,
) -> impl Stream<Item = Result<Bytes, E>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Send + 'static,
{
    futures_util::stream::unfold(
        // Fused: after the trailer the body is polled once more, past the chunks' end.
        (Box::pin(chunks.fuse()), encoder),
        |(mut chunks, mut encoder)| async move {
            match chunks.next().await {
                Some(Ok(chunk)) => {
                    let chunk = match encoder.as_mut() {
                        Some(encoder) => encoder.chunk(&chunk),
                        None => chunk,
                    };
                    Some((Ok(chunk), (chunks, encoder)))
                }
                Some(Err(error)) => Some((Err(error), (chunks, encoder))),
                // The body ends: the coding's trailer goes last.
                None => encoder
                    .take()
                    .map(|encoder| (Ok(encoder.finish()), (chunks, None))),
            }
        },
    )
}

/// A streamed body's chunks decoded by `decoder` as they arrive (unchanged without one); a
/// broken body or a bad encoding is an I/O error.
pub fn decoded<S, E>(
    chunks: S,
    mut decoder: Option<StreamDecoder>,
) -> impl Stream<Item = io::Result<Bytes>>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    chunks.map(move |chunk| {
        let chunk = chunk.map_err(|e| io::Error::other(e.to_string()))?;
        match decoder.as_mut() {
            Some(decoder) => decoder.feed(&chunk).map_err(io::Error::other),
            None => Ok(chunk),
        }
    })
}

/// The decoder for a response's (or request's) `Content-Encoding`: `None` for none or
/// `identity`, an error naming any other coding.
pub fn decoder_for(headers: &HeaderMap) -> Result<Option<StreamDecoder>, String> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(None);
    };
    match value.to_str().map(str::trim) {
        Ok(coding) if coding.eq_ignore_ascii_case("identity") => Ok(None),
        Ok(coding) if coding.eq_ignore_ascii_case("gzip") => {
            Ok(Some(StreamDecoder::Gzip(GzDecoder::new(Vec::new()))))
        }
        Ok(coding) if coding.eq_ignore_ascii_case("deflate") => {
            Ok(Some(StreamDecoder::Zlib(ZlibDecoder::new(Vec::new()))))
        }
        _ => Err(format!(
            "unsupported Content-Encoding {value:?}: expected gzip, deflate or identity"
        )),
    }
}

/// A body decoded whole by its `Content-Encoding` (unchanged without one).
pub fn decode_body(headers: &HeaderMap, body: Bytes) -> Result<Bytes, String> {
    match decoder_for(headers)? {
        None => Ok(body),
        Some(mut decoder) => {
            let out = decoder.feed(&body)?;
            let rest = decoder.finish()?;
            if rest.is_empty() {
                return Ok(out);
            }
            Ok([&out[..], &rest[..]].concat().into())
        }
    }
}

/// Decodes a compressed body as its chunks arrive.
pub enum StreamDecoder {
    /// `deflate` (zlib-wrapped).
    Zlib(ZlibDecoder<Vec<u8>>),
    /// `gzip`.
    Gzip(GzDecoder<Vec<u8>>),
}

impl StreamDecoder {
    /// What `data` decodes to (possibly nothing yet), or why it does not decode.
    pub fn feed(&mut self, data: &[u8]) -> Result<Bytes, String> {
        for slice in data.chunks(DECODE_SLICE) {
            // Flushed slice by slice: a decoder holds output back until asked for it.
            let (written, produced) = match self {
                StreamDecoder::Zlib(decoder) => (
                    decoder.write_all(slice).and_then(|()| decoder.flush()),
                    decoder.get_ref().len(),
                ),
                StreamDecoder::Gzip(decoder) => (
                    decoder.write_all(slice).and_then(|()| decoder.flush()),
                    decoder.get_ref().len(),
                ),
            };
            written.map_err(|e| format!("compressed body does not decode: {e}"))?;
            if produced > MAX_DECODED_BYTES {
                return Err(format!(
                    "compressed body decodes past {MAX_DECODED_BYTES} bytes (a decompression bomb?)"
                ));
            }
        }
        let out = match self {
            StreamDecoder::Zlib(decoder) => decoder.get_mut(),
            StreamDecoder::Gzip(decoder) => decoder.get_mut(),
        };
        Ok(Bytes::from(std::mem::take(out)))
    }

    /// The last of the output, once the stream's end (its trailer) was read and checked.
    pub fn finish(self) -> Result<Bytes, String> {
        let finished: io::Result<Vec<u8>> = match self {
            StreamDecoder::Zlib(decoder) => decoder.finish(),
            StreamDecoder::Gzip(decoder) => decoder.finish(),
        };
        finished
            .map(Bytes::from)
            .map_err(|e| format!("compressed body ends badly: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    /// What a client accepts decides; `q=0` refuses; off never compresses.
    #[test]
    fn negotiation_follows_accept_encoding() {
        let gzip = Compression::Gzip;
        assert_eq!(
            gzip.for_request(&headers(&[("accept-encoding", "br, GZIP;q=0.8")])),
            gzip
        );
        assert_eq!(
            gzip.for_request(&headers(&[("accept-encoding", "gzip;q=0")])),
            Compression::Off
        );
        assert_eq!(gzip.for_request(&headers(&[])), Compression::Off);
        assert_eq!(
            Compression::Deflate.for_request(&headers(&[("accept-encoding", "gzip")])),
            Compression::Off
        );
        assert_eq!(
            Compression::Off.for_request(&headers(&[("accept-encoding", "gzip")])),
            Compression::Off
        );
    }

    /// A stream compressed chunk by chunk decodes chunk by chunk to the same bytes, with the
    /// trailer checked, in both codings; a whole body round-trips too.
    #[test]
    fn streams_and_bodies_round_trip() {
        for (compression, coding) in [
            (Compression::Gzip, "gzip"),
            (Compression::Deflate, "deflate"),
        ] {
            let mut encoder = compression.encoder().unwrap();
            let mut decoder = decoder_for(&headers(&[("content-encoding", coding)]))
                .unwrap()
                .unwrap();
            for i in 0..50 {
                let chunk = format!("id: {i}\ndata: {{\"seq\":{i}}}\n\n");
                // Each chunk decodes whole the moment it arrives: nothing waits for the next.
                assert_eq!(
                    decoder.feed(&encoder.chunk(chunk.as_bytes())).unwrap(),
                    chunk
                );
            }
            assert!(decoder.feed(&encoder.finish()).unwrap().is_empty());
            assert!(decoder.finish().unwrap().is_empty());

            let body = b"{\"events\":[]}".repeat(100);
            let compressed = compression.compress(Bytes::from(body.clone()));
            assert!(compressed.len() < body.len() / 10);
            let encoding = headers(&[("content-encoding", coding)]);
            assert_eq!(decode_body(&encoding, compressed).unwrap(), body);
        }
    }

    /// Bad input is an error, never a panic: an unknown coding, bytes that are not compressed,
    /// a body cut short, and a bomb past the bound.
    #[test]
    fn bad_bodies_are_errors() {
        let unknown = headers(&[("content-encoding", "br")]);
        assert!(decoder_for(&unknown).is_err_and(|why| why.contains("br")));
        let gzip = headers(&[("content-encoding", "gzip")]);
        assert!(decode_body(&gzip, Bytes::from_static(b"not gzip at all")).is_err());
        let whole = Compression::Gzip.compress(Bytes::from_static(&[b'x'; 1000]));
        assert!(decode_body(&gzip, whole.slice(..whole.len() - 4)).is_err());
        let bomb = vec![0u8; MAX_DECODED_BYTES + 1024 * 1024];
        let bomb = Compression::Gzip.compress(Bytes::from(bomb));
        assert!(decode_body(&gzip, bomb).unwrap_err().contains("bomb"));
        assert_eq!(
            decode_body(&HeaderMap::new(), Bytes::from_static(b"plain")).unwrap(),
            "plain"
        );
    }
}
