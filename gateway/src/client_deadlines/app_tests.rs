//! Unit tests of the listeners' apps ([`Guarded`]): the keep-alive loop's wait for each
//! request's first bytes, and the cleanup after the drain window.
use super::*;
use crate::client_deadlines::drain_window;
use crate::client_deadlines::tests::{loopback, D, PAST};
use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An inner app that counts its cleanups and the requests it was handed (it reads each head
/// whole, answers 204 and keeps the connection).
struct Counted(Arc<std::sync::atomic::AtomicUsize>);

#[async_trait]
impl HttpServerApp for Counted {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _w: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.0.fetch_add(100, std::sync::atomic::Ordering::SeqCst);
        if !session.read_request().await.ok()? {
            return None;
        }
        let resp = pingora_http::ResponseHeader::build(204, None).unwrap();
        session.write_response_header(Box::new(resp)).await.ok()?;
        let settings = pingora_core::apps::HttpPersistentSettings::for_session(&session);
        session
            .finish()
            .await
            .ok()?
            .map(|s| ReusedHttpStream::from_reusable_stream(s, settings))
    }
    async fn http_cleanup(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `Guarded` over a [`Counted`] app, with deadlines no test here reaches.
fn counted_app(count: &Arc<std::sync::atomic::AtomicUsize>) -> Arc<Guarded<Counted>> {
    Arc::new(Guarded::new(
        Counted(count.clone()),
        Deadlines {
            header: Duration::from_secs(30),
            idle: Duration::from_secs(30),
        },
    ))
}

/// A plain listener's connection served by `Guarded` over real loopback TCP, with its client.
async fn served(
    app: Arc<Guarded<Counted>>,
) -> (tokio::task::JoinHandle<Option<Stream>>, TcpStream) {
    let (stream, client) = loopback().await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let _not_shutting_down = tx;
        app.process_new(stream, &rx).await
    });
    (task, client)
}

/// Read one response head from `client`.
async fn response(client: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

#[tokio::test]
async fn the_inner_app_sees_a_keep_alive_request_only_once_its_bytes_arrived() {
    use std::sync::atomic::Ordering::SeqCst;
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = counted_app(&count);
    let (task, mut client) = served(app.clone()).await;
    // Connected, silent: Pingora's per-request state is not created.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count.load(SeqCst), 0);
    for i in 1..=3 {
        // A head in two parts: the first bytes are read ahead here, the rest by the app.
        client.write_all(b"GET /x HTTP/1.1\r\nHo").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"st: a\r\n\r\n").await.unwrap();
        assert!(response(&mut client).await.starts_with("HTTP/1.1 204"));
        // Idle again: the app is not holding the connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(count.load(SeqCst), 100 * i);
    }
    // The client leaves: the connection ends without another request.
    drop(client);
    assert!(task.await.unwrap().is_none());
    assert_eq!(count.load(SeqCst), 300);
}

#[tokio::test]
async fn a_connection_waiting_for_its_next_request_is_closed_by_the_cleanup() {
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = counted_app(&count);
    let (task, mut client) = served(app.clone()).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(response(&mut client).await.starts_with("HTTP/1.1 204"));
    app.cleanup().await;
    let ended = tokio::time::timeout(Duration::from_secs(30), task).await;
    assert!(ended.expect("the wait ended").unwrap().is_none());
    let mut buf = [0u8; 8];
    assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed");
}

#[tokio::test]
async fn idle_reads_are_ended_only_after_the_drain_window() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    assert_eq!(
        drain_window(Duration::from_secs(5)),
        Duration::from_millis(2500)
    );
    let cleaned = Arc::new(AtomicUsize::new(0));
    // No window: the inner cleanup (Pingora's end of idle reads) at once.
    Guarded::new(Counted(cleaned.clone()), D).cleanup().await;
    assert_eq!(cleaned.load(SeqCst), 1);
    // With one: not while it lasts.
    let g =
        Arc::new(Guarded::new(Counted(cleaned.clone()), D).drain_for(Duration::from_secs(3600)));
    let task = tokio::spawn({
        let g = g.clone();
        async move { g.cleanup().await }
    });
    tokio::time::sleep(PAST).await;
    assert_eq!(
        cleaned.load(SeqCst),
        1,
        "idle reads ended within the window"
    );
    assert!(!task.is_finished());
    task.abort();
}
