//! pushbench's WebSocket client: yawc, resuming with `?after=SEQ` after a dropped connection,
//! and sending its messages up (two-way traffic) as text frames on the same connection.

use std::task::{Context, Poll};

use futures_util::SinkExt;
use yawc::close::CloseCode;
use yawc::{Frame, OpCode, WebSocket};

use crate::event::MAX_EVENT_BYTES;
use crate::transport::tls::ALPN_HTTP1;
use crate::transport::{ClientConfig, ClientError, ClientStream, Sink, Target};

use super::subscriber::{self, url, Connection, Read};
use super::{options, CLOSE_GRACE, READ_BUFFER};

/// Subscribes to `ws://server/ws` (`wss://` over TLS) and feeds every text frame to the sink.
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    subscriber::subscribe(config, sink, |after| connect(target, config, after)).await
}

/// Opens one connection: from the start, or after event `after` (`?after=SEQ`, which the
/// server honours), with permessage-deflate when compression is on.
async fn connect(
    target: &Target,
    config: &ClientConfig,
    after: Option<u64>,
) -> Result<WebSocket<ClientStream>, ClientError> {
    let buffer = READ_BUFFER.read(&config.settings) as usize;
    let options =
        options(&config.settings, buffer, MAX_EVENT_BYTES).map_err(ClientError::Config)?;
    let dialer = config.dialer();
    let stream = dialer.connect(target.addr, ALPN_HTTP1).await?;
    let url = url(target, config, after, dialer.secure());
    let url = url
        .parse()
        .map_err(|e| ClientError::Config(format!("WebSocket URL {url}: {e}")))?;
    // Boxed, so the handshake takes room only while it lasts, not for the stream's life.
    let handshake = Box::pin(WebSocket::handshake(url, stream, options));
    tokio::time::timeout(config.connect_timeout, handshake)
        .await
        .map_err(|_| ClientError::Protocol("WebSocket handshake timed out".into()))?
        .map_err(|e| ClientError::Protocol(format!("WebSocket handshake failed: {e}")))
}

impl Connection for WebSocket<ClientStream> {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Read, String>>> {
        // Frames with their errors, so a broken connection says why. yawc answers pings and
        // the server's close frame itself; reading on sends the answers.
        self.poll_next_frame(cx).map(|frame| {
            Some(match frame {
                Ok(frame) => Ok(match frame.opcode() {
                    OpCode::Text => Read::Text(frame.into_payload()),
                    OpCode::Binary => Read::Binary,
                    OpCode::Close => {
                        Read::Close(frame.close_code().unwrap_or(CloseCode::Status).into())
                    }
                    _ => Read::Other,
                }),
                Err(error) => Err(error.to_string()),
            })
        })
    }

    async fn send_text(&mut self, text: Vec<u8>) -> Result<(), String> {
        self.send(Frame::text(text))
            .await
            .map_err(|e| e.to_string())
    }

    async fn close_normally(&mut self) -> bool {
        let close = Frame::close(CloseCode::Normal, "received the whole stream");
        if self.send(close).await.is_err() {
            return false;
        }
        let answered = tokio::time::timeout(CLOSE_GRACE, async {
            while let Ok(frame) = self.next_frame().await {
                if frame.opcode() == OpCode::Close {
                    return true;
                }
            }
            false
        });
        answered.await.unwrap_or(false)
    }
}
