//! Writing one answer on a lean HTTP/1.1 connection: the head, then the body framed by its
//! length when the body knows it (chunked when it does not), written as it comes and batched
//! while more is ready, from a buffer that lives only while the answer is written.

use std::io;
use std::io::Write as _;

use axum::http::{header, Response, StatusCode};
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use http_body_util::BodyExt as _;
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::{while_watching, Limits};

/// Bytes gathered before they are written even while more of the body is ready.
const WRITE_BATCH: usize = 64 * 1024;
/// How long a refused client's remaining bytes are read and dropped before the connection
/// closes, so that the refusal reaches it (closed with bytes unread, the kernel would send a
/// reset, which may arrive before the refusal is read).
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
/// The most bytes read and dropped for that.
const LINGER_BYTES: u64 = 1024 * 1024;

/// How a request asked to be answered.
#[derive(Clone, Copy, Debug)]
pub(super) struct Answered {
    /// A `HEAD` request: the head only.
    pub(super) head_only: bool,
    /// The connection may carry on to the next request; otherwise the answer says
    /// `Connection: close`.
    pub(super) keep_alive: bool,
    /// The client speaks HTTP/1.1, so a body of unknown length can go chunked; to an HTTP/1.0
    /// client it is ended by the close.
    pub(super) http11: bool,
}

/// Writes `response` as `answered` asks, the connection watched while a streamed body waits
/// for more (the client's bytes meanwhile kept in `unread`). `true` when the connection
/// carries on to the next request.
pub(super) async fn write<I, B>(
    io: &mut I,
    unread: &mut BytesMut,
    limits: &Limits,
    response: Response<B>,
    answered: Answered,
) -> io::Result<bool>
where
    I: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let (parts, body) = response.into_parts();
    // The application may ask for the connection to close (a refusal past the subscriber cap).
    let bodiless = answered.head_only
        || parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let length = body.size_hint().exact();
    let chunked = !bodiless && length.is_none() && answered.http11;
    let ended_by_close = !bodiless && length.is_none() && !answered.http11;
    let keep_alive = answered.keep_alive && !closes(&parts.headers) && !ended_by_close;
    let mut out = Vec::with_capacity(256);
    head(
        &mut out,
        &parts,
        length.filter(|_| parts.status != StatusCode::NO_CONTENT),
        chunked,
        keep_alive,
    );
    if !bodiless && !write_body(io, unread, limits, &mut out, (body, chunked)).await? {
        return Ok(false); // the client left while the body was on its way
    }
    io.write_all(&out).await?;
    io.flush().await?;
    if !keep_alive {
        io.shutdown().await?;
    }
    Ok(keep_alive)
}

/// The answer's head into `out`. Framing and connection fields are this connection's to say,
/// so the application's own are replaced.
fn head(
    out: &mut Vec<u8>,
    parts: &axum::http::response::Parts,
    length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
) {
    let reason = parts.status.canonical_reason().unwrap_or("");
    let _ = write!(out, "HTTP/1.1 {} {reason}\r\n", parts.status.as_u16());
    for (name, value) in &parts.headers {
        let framing = [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::CONNECTION,
            header::DATE,
        ];
        if framing.contains(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(
        out,
        "date: {}\r\n",
        httpdate::fmt_http_date(std::time::SystemTime::now())
    );
    if let Some(length) = length {
        let _ = write!(out, "content-length: {length}\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The body after the head in `out`: frames appended while they are ready, written when the
/// body has to wait for more (a streamed answer reaches its client as it is made) or a batch
/// is full. The last bytes are left in `out` for the caller to write. `false` when the client
/// left while the body waited.
async fn write_body<I, B>(
    io: &mut I,
    unread: &mut BytesMut,
    limits: &Limits,
    out: &mut Vec<u8>,
    (body, chunked): (B, bool),
) -> io::Result<bool>
where
    I: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    loop {
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                io.write_all(out).await?;
                out.clear();
                match while_watching(io, unread, limits.max_head, body.frame()).await {
                    Some(frame) => frame,
                    None => return Ok(false),
                }
            }
        };
        let data = match frame {
            None => break,
            Some(Err(error)) => return Err(io::Error::other(error.to_string())),
            // Trailers are not sent (nothing here makes them).
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_trailers) => continue,
            },
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            let _ = write!(out, "{:x}\r\n", data.len());
        }
        out.extend_from_slice(&data);
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= WRITE_BATCH {
            io.write_all(out).await?;
            out.clear();
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    Ok(true)
}

/// Whether the application's answer asks for the connection to close.
fn closes(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

/// Answers a request that cannot be taken with `status` and `why`, then closes the connection.
pub(super) async fn refuse<I>(io: &mut I, status: StatusCode, why: &str) -> io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    let parts = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(())
        .map_err(io::Error::other)?
        .into_parts()
        .0;
    let body = format!("{why}\n");
    head(&mut out, &parts, Some(body.len() as u64), false, false);
    out.extend_from_slice(body.as_bytes());
    io.write_all(&out).await?;
    io.shutdown().await?;
    // Whatever the client still sends is read and dropped, for a bounded while, so that the
    // close does not reset the connection under the refusal.
    let mut rest = (&mut *io).take(LINGER_BYTES);
    let _ = tokio::time::timeout(LINGER, tokio::io::copy(&mut rest, &mut tokio::io::sink())).await;
    Ok(())
}
