//! A lean HTTP/1.1 server connection for answers that wait (a held long poll): the request
//! read with `httparse` into a buffer that lives only while a request is arriving, the router
//! called, and its answer written straight to the socket. While an answer is held, the
//! connection keeps no buffer at all.
//!
//! Why not hyper's connection: whatever its settings, a hyper HTTP/1 server connection keeps
//! an 8 KiB read buffer (from its first read) and an 8 KiB write buffer (from its start) for its
//! whole life; they were most of the 13 KB of server memory a held long poll cost at 19,000
//! (`docs/method.md` §4). The application is not touched: the same axum router, CORS layer and
//! enrolment serve it as every other HTTP server here ([`super::http`]). hyper still drives
//! every connection that upgrades, streams its answer or speaks HTTP/2.

mod answer;
mod request;

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::http::{Request, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::sync::watch;

/// What a connection allows its client.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// How long a request (its head and any body) may take to arrive, from when the connection
    /// starts waiting for it: a client that sends half a request, or nothing, is closed.
    pub(crate) request_timeout: Duration,
    /// The largest request head (request line and header fields) taken, bytes: past it, 431.
    pub(crate) max_head: usize,
    /// The largest request body taken, bytes: past it, 413.
    pub(crate) max_body: usize,
    /// Whether the connection is kept for the next request when the client asks for that.
    pub(crate) keep_alive: bool,
}

/// Serves requests on `io`, one at a time, until the client closes, a request cannot be
/// answered, or `drain` fires (an idle connection closes at once; an answer under way is the
/// last). `answer` is the application: each request in, its response out.
pub(crate) async fn serve_connection<I, S, F, B, E>(
    mut io: I,
    answer: S,
    limits: Limits,
    mut drain: watch::Receiver<()>,
) -> io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: Fn(Request<Full<Bytes>>) -> F,
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
    E: std::fmt::Display,
{
    // Bytes read past the last request (a pipelined next one). Empty, with nothing allocated,
    // while the connection waits: that is what keeps an idle connection small.
    let mut unread = BytesMut::new();
    loop {
        let arriving = tokio::time::timeout(
            limits.request_timeout,
            request::read(&mut io, &mut unread, &limits),
        );
        let arrived = tokio::select! {
            // Told to drain between requests: nothing is under way, so close now.
            _ = drain.changed() => return Ok(()),
            arrived = arriving => arrived,
        };
        let incoming = match arrived {
            // Too slow (as hyper's header read timeout): closed without an answer.
            Err(_elapsed) => return Ok(()),
            Ok(Ok(Some(incoming))) => incoming,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(request::Refusal::Broken(error))) => return Err(error),
            Ok(Err(request::Refusal::Answer(status, why))) => {
                return answer::refuse(&mut io, status, &why).await;
            }
        };
        let request::Incoming {
            request,
            head_only,
            keep_alive,
            http11,
        } = incoming;
        let Some((response, drained)) =
            until_answered(&mut io, &mut unread, answer(request), &mut drain, &limits).await
        else {
            return Ok(()); // the client left before its answer: nothing to write
        };
        let response = response.map_err(|error| io::Error::other(error.to_string()))?;
        let keep_alive = keep_alive && limits.keep_alive && !drained;
        let answered = answer::Answered {
            head_only,
            keep_alive,
            http11,
        };
        if !answer::write(&mut io, &mut unread, &limits, response, answered).await? {
            return Ok(());
        }
    }
}

/// Waits for the answer to a request while watching the connection ([`while_watching`]).
/// `None` when the client left; otherwise the answer, and whether a drain came meanwhile (then
/// it is the connection's last).
async fn until_answered<I, F>(
    io: &mut I,
    unread: &mut BytesMut,
    answering: F,
    drain: &mut watch::Receiver<()>,
    limits: &Limits,
) -> Option<(F::Output, bool)>
where
    I: AsyncRead + Unpin,
    F: Future,
{
    let mut watching = std::pin::pin!(while_watching(io, unread, limits.max_head, answering));
    let mut drained = false;
    loop {
        tokio::select! {
            answer = &mut watching => return answer.map(|answer| (answer, drained)),
            _ = drain.changed(), if !drained => drained = true,
        }
    }
}

/// Waits for `waiting` (an answer, the next piece of a streamed one) while reading the
/// connection: a client that closes (or whose connection breaks) meanwhile takes the future
/// with it, as under hyper, so a held poll or a stream does not outlive its subscriber. Bytes
/// it sends meanwhile (its next request, pipelined) are kept in `unread`, up to `most`. `None`
/// when the client left.
async fn while_watching<I, F>(
    io: &mut I,
    unread: &mut BytesMut,
    most: usize,
    waiting: F,
) -> Option<F::Output>
where
    I: AsyncRead + Unpin,
    F: Future,
{
    let mut waiting = std::pin::pin!(waiting);
    loop {
        // Small, and in the task only while something is awaited.
        let mut scrap = [0u8; 64];
        tokio::select! {
            done = &mut waiting => return Some(done),
            read = io.read(&mut scrap), if unread.len() < most => match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => unread.extend_from_slice(&scrap[..n]),
            },
        }
    }
}

#[cfg(test)]
mod tests;
