//! A subscriber's HTTP/1.1 connection for the GETs whose answers it waits on (a stream of
//! events, a held poll): the request written straight to the socket, the answer's head parsed
//! with `httparse` (hyper's own parser), its body (chunked, sized or until the close) read from
//! one buffer that grows only as far as the reads ask.
//!
//! Why not hyper's client: whatever its settings, a hyper HTTP/1 client connection holds a
//! write buffer, a read buffer and a dispatch channel of 8 KiB each, and a task of its own
//! (a heap profile of `pushbench load` with 3,000 SSE subscribers: `docs/method.md` §4). A
//! subscriber has one request in flight at a time and reads its answer in its own task, so it
//! needs none of them; at 19,000 idle subscribers they were a third of the load's memory.
//! hyper still serves every other client here (webhooks, messages sent up, HTTP/2, and
//! eventsource-client's row).

use std::net::SocketAddr;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{FutureExt as _, Stream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::client_stream::ClientStream;
use super::{tls, ClientError, Dialer};

/// The first read's room, and the least a read asks for: an idle subscriber holds this much.
const READ_SIZE: usize = 4 * 1024;
/// The most one read asks for, reached only while reads keep filling the room they were given
/// (large payloads, a backlog), as hyper's adaptive reads do.
const MAX_READ_SIZE: usize = 64 * 1024;
/// The largest answer head read: past it the answer is refused (hyper's own default ceiling).
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields an answer head may carry.
const MAX_HEADERS: usize = 64;
/// The longest chunk-size line or trailer field read.
const MAX_LINE: usize = 4 * 1024;

/// One HTTP/1.1 connection of a subscriber's own, for one request at a time.
#[derive(Debug)]
pub(crate) struct Http1Connection {
    stream: ClientStream,
    /// Bytes read and not yet taken.
    buf: BytesMut,
    /// How much the next read asks for.
    read_size: usize,
    /// Whether another request may follow: the last answer was read whole and said neither
    /// `Connection: close` nor that it ends with the connection.
    reusable: bool,
}

impl Http1Connection {
    /// Connects to `server` as `dialer` says (source address, timeout, TLS asking for
    /// `http/1.1`).
    pub(crate) async fn open(dialer: &Dialer<'_>, server: SocketAddr) -> Result<Self, ClientError> {
        let stream = dialer.connect(server, tls::ALPN_HTTP1).await?;
        Ok(Self {
            stream,
            buf: BytesMut::new(),
            read_size: READ_SIZE,
            reusable: true,
        })
    }

    /// Whether the connection can carry no further request: its last answer said so, or the
    /// server has closed it (or sent bytes no request asked for) since, as far as the socket
    /// shows without waiting.
    pub(crate) fn is_closed(&mut self) -> bool {
        if self.reusable && self.buf.is_empty() {
            // One read that does not wait: nothing to read is the open connection's state; its
            // end, an error or bytes no request asked for all close it.
            let mut probe = [0u8; 1];
            if self.stream.read(&mut probe).now_or_never().is_some() {
                self.reusable = false;
            }
        }
        !self.reusable || !self.buf.is_empty()
    }

    /// Sends `request`'s head (a GET's: its body is not sent) and reads the answer's head; the
    /// answer's body is read from the [`Body`] returned, which owns the connection.
    pub(crate) async fn send<B>(
        mut self,
        request: &Request<B>,
    ) -> Result<Response<Body>, ClientError> {
        let head = request_head(request)?;
        self.stream
            .write_all(&head)
            .await
            .map_err(|e| broken("sending the request", &e))?;
        // Under TLS the record is sent only once flushed.
        self.stream
            .flush()
            .await
            .map_err(|e| broken("sending the request", &e))?;
        let (status, headers, state) = self.read_head().await?;
        let mut response = Response::new(Body {
            connection: self,
            state,
        });
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }

    /// Reads the answer's head, past any interim (1xx) answers: its status, its headers and
    /// how its body is framed.
    async fn read_head(&mut self) -> Result<(StatusCode, HeaderMap, BodyState), ClientError> {
        loop {
            if let Some((length, status, headers, keep_alive)) = parse_head(&self.buf)? {
                self.buf.advance(length);
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(ClientError::Protocol(
                        "HTTP: the server switched protocols unasked".into(),
                    ));
                }
                // 100 Continue and its kind come before the answer proper.
                if status.is_informational() {
                    continue;
                }
                let state = BodyState::of(status, &headers)?;
                self.reusable = keep_alive && !matches!(state, BodyState::UntilClose);
                return Ok((status, headers, state));
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(ClientError::Protocol(format!(
                    "HTTP: the answer's head is longer than {MAX_HEAD} bytes"
                )));
            }
            if self.read_more().await? == 0 {
                return Err(ClientError::Protocol(
                    "HTTP: the server closed the connection before answering".into(),
                ));
            }
        }
    }

    /// Reads what the socket has into the buffer; 0 at the connection's end.
    async fn read_more(&mut self) -> Result<usize, ClientError> {
        if self.buf.is_empty() && self.buf.capacity() > 2 * self.read_size {
            // Room a burst grew is given back once it is read, so an idle subscriber holds
            // little (the bytes handed out keep their own share until they are dropped).
            self.buf = BytesMut::new();
        }
        let room = self.buf.capacity() - self.buf.len();
        if room < self.read_size {
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let read = self
            .stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| broken("reading the answer", &e))?;
        // Reads that fill their room ask for more next time; small ones for less.
        if read == room {
            self.read_size = (self.read_size * 2).min(MAX_READ_SIZE);
        } else if read < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(READ_SIZE);
        }
        Ok(read)
    }
}

/// An answer's body, read as it arrives; it owns the connection it arrives on.
#[derive(Debug)]
pub(crate) struct Body {
    connection: Http1Connection,
    state: BodyState,
}

/// Where the reading of a body stands.
#[derive(Clone, Copy, Debug, PartialEq)]
enum BodyState {
    /// This many bytes of a `Content-Length` body are still to come.
    Sized(u64),
    /// The body runs until the server closes the connection.
    UntilClose,
    /// A chunk-size line is next.
    ChunkSize,
    /// This many bytes of the current chunk are still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data is next.
    ChunkEnd,
    /// Trailer fields (skipped) and the blank line that ends a chunked body are next.
    Trailers,
    /// The body has been read whole.
    Done,
}

impl BodyState {
    /// How an answer with `status` and `headers` frames its body (RFC 9112 §6.3).
    fn of(status: StatusCode, headers: &HeaderMap) -> Result<Self, ClientError> {
        if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok(Self::Done);
        }
        if let Some(codings) = headers.get(header::TRANSFER_ENCODING) {
            let last = codings.as_bytes().rsplit(|&b| b == b',').next();
            let chunked =
                last.is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            return Ok(if chunked {
                Self::ChunkSize
            } else {
                Self::UntilClose
            });
        }
        let mut length = None;
        for value in headers.get_all(header::CONTENT_LENGTH) {
            let parsed = std::str::from_utf8(value.as_bytes())
                .ok()
                .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|text| text.parse::<u64>().ok());
            match (parsed, length) {
                (Some(parsed), None) => length = Some(parsed),
                (Some(parsed), Some(seen)) if parsed == seen => {}
                _ => {
                    return Err(ClientError::Protocol(format!(
                        "HTTP: the answer's Content-Length {value:?} is not one length"
                    )))
                }
            }
        }
        Ok(match length {
            Some(0) => Self::Done,
            Some(length) => Self::Sized(length),
            None => Self::UntilClose,
        })
    }
}

impl Body {
    /// The body's next bytes as they arrive; `None` once it has been read whole.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, ClientError> {
        let connection = &mut self.connection;
        loop {
            let buf = &mut connection.buf;
            match &mut self.state {
                BodyState::Done => return Ok(None),
                BodyState::Sized(left) | BodyState::ChunkData(left) if !buf.is_empty() => {
                    let take = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = match self.state {
                            BodyState::Sized(_) => BodyState::Done,
                            _ => BodyState::ChunkEnd,
                        };
                    }
                    return Ok(Some(buf.split_to(take).freeze()));
                }
                BodyState::UntilClose if !buf.is_empty() => {
                    return Ok(Some(buf.split().freeze()));
                }
                BodyState::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = match size {
                            0 => BodyState::Trailers,
                            size => BodyState::ChunkData(size),
                        };
                        continue;
                    }
                    Ok(httparse::Status::Partial) if buf.len() < MAX_LINE => {}
                    _ => {
                        return Err(ClientError::Protocol(
                            "HTTP: a chunk's size line in the answer does not parse".into(),
                        ))
                    }
                },
                BodyState::ChunkEnd if buf.len() >= 2 => {
                    if &buf[..2] != b"\r\n" {
                        return Err(ClientError::Protocol(
                            "HTTP: a chunk of the answer runs past its size".into(),
                        ));
                    }
                    buf.advance(2);
                    self.state = BodyState::ChunkSize;
                    continue;
                }
                BodyState::Trailers => match buf.windows(2).position(|pair| pair == b"\r\n") {
                    // The blank line: the body is whole.
                    Some(0) => {
                        buf.advance(2);
                        self.state = BodyState::Done;
                        continue;
                    }
                    // A trailer field, which nothing here reads.
                    Some(end) => {
                        buf.advance(end + 2);
                        continue;
                    }
                    None if buf.len() < MAX_LINE => {}
                    None => {
                        return Err(ClientError::Protocol(format!(
                            "HTTP: a trailer field of the answer is longer than {MAX_LINE} bytes"
                        )))
                    }
                },
                // Nothing in the buffer for the state's next step: read on.
                _ => {}
            }
            if connection.read_more().await? == 0 {
                if self.state == BodyState::UntilClose {
                    self.state = BodyState::Done;
                    continue;
                }
                connection.reusable = false;
                return Err(ClientError::Protocol(
                    "HTTP: the server closed the connection before the answer was whole".into(),
                ));
            }
        }
    }

    /// The whole body, and the connection it came on (for the next request, unless
    /// [`Http1Connection::is_closed`]).
    pub(crate) async fn collect(mut self) -> Result<(Bytes, Http1Connection), ClientError> {
        let Some(first) = self.next().await? else {
            return Ok((Bytes::new(), self.connection));
        };
        let Some(second) = self.next().await? else {
            // Most answers arrive in one read: no copy.
            return Ok((first, self.connection));
        };
        let mut whole = BytesMut::from(&first[..]);
        whole.extend_from_slice(&second);
        while let Some(more) = self.next().await? {
            whole.extend_from_slice(&more);
        }
        Ok((whole.freeze(), self.connection))
    }

    /// The body as a stream of its bytes, ending where the body does.
    pub(crate) fn into_stream(self) -> impl Stream<Item = Result<Bytes, ClientError>> + Send {
        futures_util::stream::unfold(Some(self), |body| async move {
            let mut body = body?;
            match body.next().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(body))),
                Ok(None) => None,
                // A broken body ends the stream after its error.
                Err(error) => Some((Err(error), None)),
            }
        })
    }
}

/// The request line and header fields of `request`, as they go on the wire.
fn request_head<B>(request: &Request<B>) -> Result<Vec<u8>, ClientError> {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    if !request.headers().contains_key(header::HOST) {
        return Err(ClientError::Config(
            "HTTP/1.1 request without a Host header".into(),
        ));
    }
    let mut head = Vec::with_capacity(128 + target.len());
    head.extend_from_slice(request.method().as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    // Names and values were checked when the request was built: no CR or LF can be in them.
    for (name, value) in request.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Ok(head)
}

/// What a parsed answer head says, for the caller to act on.
type Head = (usize, StatusCode, HeaderMap, bool);

/// The answer head at the start of `buf` (its length, status, headers, and whether the
/// connection stays open after it), or `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ClientError> {
    let bad = |what: String| ClientError::Protocol(format!("HTTP: the answer's head {what}"));
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let length = match response.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(format!("does not parse: {e}"))),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| bad(format!("has status {:?}", response.code)))?;
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for field in response.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| bad(format!("has a field named {:?}", field.name)))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| bad(format!("has a bad value for {}", field.name)))?;
        headers.append(name, value);
    }
    // HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 closes it.
    let says = |token: &str| {
        headers.get_all(header::CONNECTION).iter().any(|value| {
            value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    let keep_alive = match response.version {
        Some(1) => !says("close"),
        _ => says("keep-alive"),
    };
    Ok(Some((length, status, headers, keep_alive)))
}

/// The connection failed while `doing` something.
fn broken(doing: &str, error: &std::io::Error) -> ClientError {
    ClientError::Protocol(format!("HTTP: {doing}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::TcpListener;

    /// A server that answers each request it reads with the next of `answers` (split into
    /// pieces at every `|`, written apart), closing the connection at an empty one, and
    /// otherwise holding it after the last until the client closes it.
    async fn server(answers: Vec<&'static str>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            for answer in answers {
                if answer.is_empty() {
                    return;
                }
                let mut request = Vec::new();
                while !request.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if socket.read(&mut byte).await.unwrap() == 0 {
                        return;
                    }
                    request.push(byte[0]);
                }
                for piece in answer.split('|') {
                    socket.write_all(piece.as_bytes()).await.unwrap();
                    socket.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let _ = socket.read(&mut [0u8; 1]).await;
        });
        addr
    }

    fn dialer() -> Dialer<'static> {
        Dialer {
            bind: None,
            timeout: Duration::from_secs(5),
            tls: None,
            read_rate: None,
            server_name: None,
        }
    }

    fn get() -> Request<()> {
        Request::get("/events?after=1")
            .header("host", "example")
            .body(())
            .unwrap()
    }

    async fn answer_to(addr: SocketAddr) -> Result<(StatusCode, Bytes, bool), ClientError> {
        let connection = Http1Connection::open(&dialer(), addr).await?;
        let response = connection.send(&get()).await?;
        let status = response.status();
        let (body, mut connection) = response.into_body().collect().await?;
        Ok((status, body, connection.is_closed()))
    }

    /// Chunked bodies in pieces that split sizes, data and CRLFs, with trailers; sized ones;
    /// ones until the close; an interim 100 first: each read whole, and the connection
    /// kept only where the answer allows.
    #[tokio::test]
    async fn bodies_are_read_whole_however_they_are_framed() {
        let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel|lo\r|\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1|\r\n\r\n";
        assert_eq!(
            answer_to(server(vec![chunked]).await).await.unwrap(),
            (StatusCode::OK, Bytes::from("hello world"), false)
        );
        let sized =
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab|cde";
        let (status, body, _) = answer_to(server(vec![sized]).await).await.unwrap();
        assert_eq!((status, body), (StatusCode::OK, Bytes::from("abcde")));
        let until_close = "HTTP/1.1 200 OK\r\n\r\nall |of it";
        assert_eq!(
            answer_to(server(vec![until_close, ""]).await)
                .await
                .unwrap(),
            (StatusCode::OK, Bytes::from("all of it"), true)
        );
        let closing = "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";
        assert_eq!(
            answer_to(server(vec![closing]).await).await.unwrap(),
            (StatusCode::NO_CONTENT, Bytes::new(), true)
        );
    }

    /// One connection carries one request after another while the server keeps it.
    #[tokio::test]
    async fn a_kept_connection_carries_the_next_request() {
        let answers = vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n",
            "",
        ];
        let mut connection = Http1Connection::open(&dialer(), server(answers).await)
            .await
            .unwrap();
        for expected in ["one", "two"] {
            assert!(!connection.is_closed());
            let response = connection.send(&get()).await.unwrap();
            let (body, kept) = response.into_body().collect().await.unwrap();
            assert_eq!(body, Bytes::from(expected));
            connection = kept;
        }
        // The server closes it after its last answer, with no word: the socket shows it.
        let mut waited = 0;
        while !connection.is_closed() && waited < 500 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        assert!(connection.is_closed());
    }

    /// Hostile or broken answers are errors that say what broke, never a hang or a panic.
    #[tokio::test]
    async fn broken_answers_are_named() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
                "closed",
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                "chunk's size",
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n",
                "past its size",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                "not one length",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                "not one length",
            ),
            ("HTTX/1.1 200 OK\r\n\r\n", "does not parse"),
            (
                "HTTP/1.1 101 Switching Protocols\r\n\r\n",
                "switched protocols",
            ),
            ("HTTP/1.1 200 OK\r\ncontent", "before answering"),
        ];
        for (answer, says) in cases {
            let error = answer_to(server(vec![answer, ""]).await).await.unwrap_err();
            assert!(error.to_string().contains(says), "{answer:?}: {error}");
        }
        // A head that never ends is cut at its ceiling.
        let endless: &'static str =
            Box::leak(format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD)).into_boxed_str());
        let error = answer_to(server(vec![endless, ""]).await)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("longer than"), "{error}");
    }

    /// A body read as a stream yields its bytes in order and ends where the body does.
    #[tokio::test]
    async fn a_streamed_body_ends_with_the_body() {
        use futures_util::StreamExt as _;
        let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n|2\r\ncd\r\n|0\r\n\r\n";
        let connection = Http1Connection::open(&dialer(), server(vec![chunked]).await)
            .await
            .unwrap();
        let response = connection.send(&get()).await.unwrap();
        let pieces: Vec<Bytes> = response
            .into_body()
            .into_stream()
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(pieces.concat(), b"abcd");
    }
}
