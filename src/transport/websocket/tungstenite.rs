//! The WebSocket client most Rust services run: tokio-tungstenite over the house's connection
//! (TCP, TLS when on), on the same subscriber loop as pushbench's yawc client (resuming with
//! `?after=SEQ`, messages up as text frames). tungstenite has no permessage-deflate, so
//! compression is refused.

use std::task::{Context, Poll};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::event::MAX_EVENT_BYTES;
use crate::transport::tls::ALPN_HTTP1;
use crate::transport::{ClientConfig, ClientError, ClientStream, Sink, Target};

use super::subscriber::{self, url, Connection, Read};
use super::{CLOSE_GRACE, READ_BUFFER};

/// Subscribes to `ws://server/ws` (`wss://` over TLS) and feeds every text message to the
/// sink.
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    subscriber::subscribe(config, sink, |after| connect(target, config, after)).await
}

/// Opens one connection from the start or after event `after`: the read buffer the size of
/// pushbench's client's, the largest message an event.
async fn connect(
    target: &Target,
    config: &ClientConfig,
    after: Option<u64>,
) -> Result<WebSocketStream<ClientStream>, ClientError> {
    let dialer = config.dialer();
    let stream = dialer.connect(target.addr, ALPN_HTTP1).await?;
    let request = url(target, config, after, dialer.secure())
        .into_client_request()
        .map_err(|e| ClientError::Config(format!("WebSocket URL: {e}")))?;
    let settings = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER.read(&config.settings) as usize)
        .max_message_size(Some(MAX_EVENT_BYTES))
        .max_frame_size(Some(MAX_EVENT_BYTES));
    // Boxed, so the handshake takes room only while it lasts, not for the stream's life.
    let handshake = Box::pin(tokio_tungstenite::client_async_with_config(
        request,
        stream,
        Some(settings),
    ));
    let (ws, _) = tokio::time::timeout(config.connect_timeout, handshake)
        .await
        .map_err(|_| ClientError::Protocol("WebSocket handshake timed out".into()))?
        .map_err(|e| ClientError::Protocol(format!("WebSocket handshake failed: {e}")))?;
    Ok(ws)
}

impl Connection for WebSocketStream<ClientStream> {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Read, String>>> {
        // tungstenite answers pings and the server's close frame itself as it reads on.
        self.poll_next_unpin(cx).map(|message| {
            message.map(|message| match message {
                Ok(Message::Text(text)) => Ok(Read::Text(text.into())),
                Ok(Message::Binary(_)) => Ok(Read::Binary),
                Ok(Message::Close(frame)) => Ok(Read::Close(frame.map_or(1005, |f| f.code.into()))),
                Ok(_) => Ok(Read::Other),
                Err(error) => Err(error.to_string()),
            })
        })
    }

    async fn send_text(&mut self, text: Vec<u8>) -> Result<(), String> {
        let text = String::from_utf8(text).map_err(|_| "a message up that is not text")?;
        self.send(Message::text(text))
            .await
            .map_err(|e| e.to_string())
    }

    async fn close_normally(&mut self) -> bool {
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "received the whole stream".into(),
        };
        if self.close(Some(close)).await.is_err() {
            return false;
        }
        let answered = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(message)) = self.next().await {
                if matches!(message, Message::Close(_)) {
                    return true;
                }
            }
            false
        });
        answered.await.unwrap_or(false)
    }
}

/// Refuses what tungstenite cannot do: compress.
pub(super) fn refuses(settings: &crate::settings::SettingValues) -> Option<String> {
    super::axum_ws::refuses(settings)
}
