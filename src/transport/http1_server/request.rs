//! Reading one request from a lean HTTP/1.1 connection: its head parsed by `httparse`, its body
//! (sized by `Content-Length`) read whole, and whatever is wrong with either named, with the
//! status to answer it.

use std::io;

use axum::http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version,
};
use bytes::{Buf as _, Bytes, BytesMut};
use http_body_util::Full;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::Limits;

/// The room a read asks for while a request arrives (a poll's request is a few hundred bytes);
/// it doubles while a larger one keeps filling it.
const READ_SIZE: usize = 1024;
/// The most header fields a request may carry (hyper's own default).
const MAX_FIELDS: usize = 100;

/// A request, ready for the application.
pub(super) struct Incoming {
    pub(super) request: Request<Full<Bytes>>,
    /// A `HEAD` request: its answer goes without a body.
    pub(super) head_only: bool,
    /// The client keeps the connection for another request (HTTP/1.1 unless it says `close`;
    /// HTTP/1.0 only when it says `keep-alive`).
    pub(super) keep_alive: bool,
    /// The client speaks HTTP/1.1 (not 1.0).
    pub(super) http11: bool,
}

/// Why no request could be read.
pub(super) enum Refusal {
    /// The connection broke, or closed in the middle of a request: nothing to answer.
    Broken(io::Error),
    /// The request is not one this server takes: answered with this status and reason, then
    /// the connection closes.
    Answer(StatusCode, String),
}

impl Refusal {
    fn answer(status: StatusCode, why: impl Into<String>) -> Self {
        Self::Answer(status, why.into())
    }
}

/// The next request on the connection, its bytes taken from `unread` (read into it as needed,
/// and left holding whatever follows the request). `None` when the client closed between
/// requests.
pub(super) async fn read<I>(
    io: &mut I,
    unread: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Incoming>, Refusal>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let head = loop {
        if let Some(head) = parse_head(unread)? {
            break head;
        }
        if unread.len() >= limits.max_head {
            let why = format!("request head past {} bytes", limits.max_head);
            return Err(Refusal::answer(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                why,
            ));
        }
        if !read_more(io, unread, limits.max_head).await? {
            return Ok(None);
        }
    };
    if head.body_len > limits.max_body {
        let why = format!("request body past {} bytes", limits.max_body);
        return Err(Refusal::answer(StatusCode::PAYLOAD_TOO_LARGE, why));
    }
    let body = read_body(io, unread, head.body_len, head.expects_continue).await?;
    // The buffer is let go between requests unless the next one has begun arriving.
    if unread.is_empty() {
        *unread = BytesMut::new();
    }
    let Head {
        parts, keep_alive, ..
    } = head;
    let head_only = parts.method == Method::HEAD;
    let http11 = parts.version == Version::HTTP_11;
    Ok(Some(Incoming {
        request: Request::from_parts(parts, Full::new(body)),
        head_only,
        keep_alive,
        http11,
    }))
}

/// Reads what the socket has into `unread`, asking for at most `ceiling` bytes in all. `false`
/// when the client closed before a request began.
async fn read_more<I>(io: &mut I, unread: &mut BytesMut, ceiling: usize) -> Result<bool, Refusal>
where
    I: AsyncRead + Unpin,
{
    let room = unread.len().max(READ_SIZE).min(ceiling - unread.len());
    unread.reserve(room);
    let mut limited = (&mut *io).take(room as u64);
    match limited.read_buf(unread).await {
        Ok(0) if unread.is_empty() => Ok(false),
        Ok(0) => Err(Refusal::Broken(io::ErrorKind::UnexpectedEof.into())),
        Ok(_) => Ok(true),
        Err(error) => Err(Refusal::Broken(error)),
    }
}

/// A request's body: `len` bytes, after a `100 Continue` when the client waits for one.
async fn read_body<I>(
    io: &mut I,
    unread: &mut BytesMut,
    len: usize,
    expects_continue: bool,
) -> Result<Bytes, Refusal>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    if len == 0 {
        return Ok(Bytes::new());
    }
    if expects_continue && unread.len() < len {
        io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(Refusal::Broken)?;
    }
    while unread.len() < len {
        unread.reserve(len - unread.len());
        match io.read_buf(unread).await {
            Ok(0) => return Err(Refusal::Broken(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(error) => return Err(Refusal::Broken(error)),
        }
    }
    Ok(unread.split_to(len).freeze())
}

/// A request head, parsed.
struct Head {
    parts: axum::http::request::Parts,
    body_len: usize,
    expects_continue: bool,
    keep_alive: bool,
}

/// The head at the front of `unread`, taken out of it, if it has arrived whole.
fn parse_head(unread: &mut BytesMut) -> Result<Option<Head>, Refusal> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut fields);
    let head_len = match parsed.parse(unread) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            let why = format!("more than {MAX_FIELDS} header fields");
            return Err(Refusal::answer(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                why,
            ));
        }
        Err(error) => return Err(bad(format!("malformed request head: {error}"))),
    };
    let (method, target, version) = match (parsed.method, parsed.path, parsed.version) {
        (Some(method), Some(target), Some(version)) => (method, target, version),
        _ => return Err(bad("incomplete request line")),
    };
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).map_err(|_| bad("bad method"))?)
        .uri(target)
        .body(())
        .map_err(|error| bad(format!("bad request target: {error}")))?;
    let headers = request.headers_mut();
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| bad(format!("bad header name {:?}", field.name)))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| bad(format!("bad value for header {name}")))?;
        headers.append(name, value);
    }
    let (mut parts, ()) = request.into_parts();
    parts.version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let head = Head {
        body_len: body_len(&parts.headers)?,
        expects_continue: has_token(&parts.headers, header::EXPECT, "100-continue"),
        keep_alive: keep_alive(parts.version, &parts.headers),
        parts,
    };
    unread.advance(head_len);
    Ok(Some(head))
}

/// The body's length, from `Content-Length`. A body framed otherwise (`Transfer-Encoding`) is
/// not taken: no client of these servers sends one, and taking it wrongly is how requests are
/// smuggled.
fn body_len(headers: &HeaderMap) -> Result<usize, Refusal> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let why = "a request body with Transfer-Encoding is not taken; send Content-Length";
        return Err(Refusal::answer(StatusCode::NOT_IMPLEMENTED, why));
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = lengths.next() else {
        return Ok(0);
    };
    if lengths.any(|other| other != first) {
        return Err(bad("conflicting Content-Length fields"));
    }
    first
        .to_str()
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| bad("bad Content-Length"))
}

/// Whether the client keeps the connection after this request.
fn keep_alive(version: Version, headers: &HeaderMap) -> bool {
    if has_token(headers, header::CONNECTION, "close") {
        return false;
    }
    version == Version::HTTP_11 || has_token(headers, header::CONNECTION, "keep-alive")
}

/// Whether a comma-separated header lists `token` (case-insensitively).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

fn bad(why: impl Into<String>) -> Refusal {
    Refusal::answer(StatusCode::BAD_REQUEST, why)
}
