//! `com.atproto.sync.subscribeRepos`: the event stream over WebSocket.
//!
//! Cursor handling as the lexicon and the reference PDS: no cursor streams
//! live events only; a cursor replays every retained event after it; one
//! behind the backfill window gets `#info OutdatedCursor` and the oldest
//! retained events; one ahead of the stream gets a `FutureCursor` error
//! frame and the connection is closed. A consumer that falls more than
//! `max_consumer_lag` events behind, or does not take a frame within
//! [`SEND_TIMEOUT`], is disconnected (`ConsumerTooSlow`): what it holds is one
//! batch of frames, whatever its lag.

use crate::Pds;
use crate::events::{BATCH, CursorStart};
use crate::routes::error_response;
use atcr_repo::firehose;
use atcr_xrpc::XrpcError;
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Query, State};
use axum::response::Response;
use futures_util::{SinkExt as _, StreamExt as _};
use std::collections::HashMap;
use std::time::Duration;

/// How long one frame may wait for a consumer to take it.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// An idle stream is pinged this often (keeps proxies from closing it).
const PING_EVERY: Duration = Duration::from_secs(30);

/// The `subscribeRepos` handler.
pub async fn subscribe_repos(
    State(pds): State<Pds>,
    Query(query): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let cursor = match query.get("cursor").map(|c| c.parse::<i64>()) {
        None => None,
        Some(Ok(c)) if c >= 0 => Some(c),
        Some(_) => {
            return error_response(&XrpcError::invalid("cursor must be a non-negative integer"));
        }
    };
    let Ok(ws) = ws else {
        return error_response(&XrpcError::invalid(
            "com.atproto.sync.subscribeRepos is a WebSocket endpoint",
        ));
    };
    let Ok(permit) = pds.inner.subscribers.clone().try_acquire_owned() else {
        return error_response(&XrpcError::new(
            503,
            "ServiceUnavailable",
            "too many event-stream consumers; try again later",
        ));
    };
    // Consumers send nothing of use: their messages are kept small.
    ws.max_message_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            let _permit = permit;
            stream(pds, socket, cursor).await;
        })
}

async fn stream(pds: Pds, socket: WebSocket, cursor: Option<i64>) {
    let (mut tx, mut rx) = socket.split();
    // Drains what the consumer sends; ends when it goes away.
    let (gone_tx, mut gone) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
        let _ = gone_tx.send(());
    });
    let _reader = AbortOnDrop(reader);
    // Subscribed before the start is computed, so no wake-up is missed.
    let mut watch = pds.event_watch();
    let send = |frame: Vec<u8>| Message::Binary(frame.into());
    let mut last = match pds.cursor_start(cursor).await {
        Ok(CursorStart::After(n)) => n,
        Ok(CursorStart::Outdated(from)) => {
            let info = firehose::message_frame(
                "#info",
                &atcr_data::Value::Map(
                    [
                        (
                            "name".to_owned(),
                            atcr_data::Value::String("OutdatedCursor".into()),
                        ),
                        (
                            "message".to_owned(),
                            atcr_data::Value::String(
                                "Requested cursor exceeded limit. Possibly missing events".into(),
                            ),
                        ),
                    ]
                    .into(),
                ),
            );
            if tx.send(send(info)).await.is_err() {
                return;
            }
            from
        }
        Ok(CursorStart::Future) => {
            let _ = tx
                .send(send(firehose::error_frame(
                    "FutureCursor",
                    "Cursor in the future.",
                )))
                .await;
            let _ = tx.close().await;
            return;
        }
        Err(e) => {
            tracing::warn!("subscribeRepos: {}", e.0);
            return;
        }
    };
    let max_lag = pds.config().max_consumer_lag;
    // The lag rule applies once the consumer has caught up: a replay from an
    // old cursor is paced by the consumer, as in the reference PDS.
    let mut caught_up = cursor.is_none();
    loop {
        let batch = match pds.events_after(last, BATCH).await {
            Ok(b) => b,
            Err(_) => return,
        };
        if batch.is_empty() {
            caught_up = true;
            tokio::select! {
                r = watch.changed() => if r.is_err() { return },
                _ = &mut gone => return,
                _ = tokio::time::sleep(PING_EVERY) => {
                    if tx.send(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                }
            }
            continue;
        }
        for (seq, frame) in batch {
            let mut too_slow = caught_up && pds.latest_seq() - seq > max_lag;
            if !too_slow {
                // While a frame waits for the consumer, the stream goes on:
                // falling too far behind ends the wait.
                let sending = tokio::time::timeout(SEND_TIMEOUT, tx.send(send(frame)));
                tokio::pin!(sending);
                loop {
                    tokio::select! {
                        r = &mut sending => match r {
                            Ok(Ok(())) => break,
                            _ => return,
                        },
                        _ = &mut gone => return,
                        r = watch.changed() => {
                            if r.is_err() {
                                return;
                            }
                            if caught_up && pds.latest_seq() - seq > max_lag {
                                too_slow = true;
                                break;
                            }
                        }
                    }
                }
            }
            if too_slow {
                tracing::info!(seq, "subscribeRepos consumer too slow; disconnected");
                // Given a few seconds: the frames already queued go first.
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    let frame =
                        firehose::error_frame("ConsumerTooSlow", "Stream consumer too slow");
                    if tx.send(send(frame)).await.is_ok() {
                        let _ = tx.close().await;
                    }
                })
                .await;
                return;
            }
            last = seq;
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
