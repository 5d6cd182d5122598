//! WebSockets for the tests: the demo backend's `/ws` echo ([`serve_echo`], tungstenite's
//! blocking server) and a client ([`Ws`], tokio-tungstenite over TCP or over the tests' TLS
//! client stream).
//!
//! The echo sends the backend's name as its first message, then echoes every text and binary
//! message. `/ws?flood` instead sends 64 KiB binary messages for as long as it can (a client
//! that never reads).
use futures_util::{SinkExt, StreamExt};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The `101` answer to a WebSocket upgrade with key `key`, with `extra` header lines
/// (each ending in CRLF).
pub fn switching_protocols(key: &str, extra: &str) -> String {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
    )
}

/// Run the echo on `stream`, whose `101` was just written (`early`: bytes the client sent
/// after its request head that were already read). Returns when the socket ends.
pub fn serve_echo<S: Read + Write>(stream: S, early: Vec<u8>, name: &str, flood: bool) {
    use tungstenite::protocol::Role;
    let mut ws = tungstenite::WebSocket::from_partially_read(stream, early, Role::Server, None);
    if ws.send(tungstenite::Message::text(name)).is_err() {
        return;
    }
    if flood {
        let chunk = tungstenite::Bytes::from(vec![b'x'; 64 * 1024]);
        while ws.send(tungstenite::Message::Binary(chunk.clone())).is_ok() {}
        return;
    }
    loop {
        match ws.read() {
            Ok(m @ (tungstenite::Message::Text(_) | tungstenite::Message::Binary(_))) => {
                if ws.send(m).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// A client socket.
pub struct Ws<S> {
    pub inner: WebSocketStream<S>,
    /// The backend named by its first message.
    pub backend: String,
    /// Headers of the `101` (lower-case names).
    pub headers: http::HeaderMap,
}

/// What a socket's read came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Read2 {
    Text(String),
    Binary(usize),
    /// A close frame (its code, 0 without one) or the end of the TCP stream.
    Closed(u16),
    /// Nothing within the wait.
    Nothing,
    /// The client failed to read (a protocol error, a reset).
    Error(String),
}

/// Open a socket to `ws://addr{path}` with `headers`, reading the backend's name.
pub async fn connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws<TcpStream>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    handshake(tcp, &format!("ws://{addr}{path}"), headers).await
}

/// Open a socket over TLS (`wss://name{path}` at `addr`, trusting `ca_pem`).
pub async fn connect_tls(
    addr: SocketAddr,
    name: &str,
    ca_pem: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws<tokio_rustls::client::TlsStream<TcpStream>>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let tls = crate::h2::tls_connect(tcp, name, ca_pem, &[b"http/1.1"]).await?;
    handshake(tls, &format!("wss://{name}{path}"), headers).await
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Ws<S>, String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    for (n, v) in headers {
        let name = http::HeaderName::from_bytes(n.as_bytes()).map_err(|e| e.to_string())?;
        let value = http::HeaderValue::from_str(v).map_err(|e| e.to_string())?;
        req.headers_mut().append(name, value);
    }
    let (inner, resp) = tokio_tungstenite::client_async(req, stream)
        .await
        .map_err(|e| format!("upgrade {url}: {e}"))?;
    let mut ws = Ws {
        inner,
        backend: String::new(),
        headers: resp.headers().clone(),
    };
    match ws.read(Duration::from_secs(30)).await {
        Read2::Text(name) => ws.backend = name,
        other => return Err(format!("{url}: no backend name first, got {other:?}")),
    }
    Ok(ws)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Ws<S> {
    /// A header of the `101` (`""` when missing).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The next data message or the end, within `wait`.
    pub async fn read(&mut self, wait: Duration) -> Read2 {
        loop {
            let next = tokio::time::timeout(wait, self.inner.next()).await;
            return match next {
                Err(_) => Read2::Nothing,
                Ok(None) => Read2::Closed(0),
                // The end of the TCP stream without a close frame.
                Ok(Some(Err(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                )))) => Read2::Closed(0),
                Ok(Some(Err(e))) => Read2::Error(e.to_string()),
                Ok(Some(Ok(Message::Text(t)))) => Read2::Text(t.to_string()),
                Ok(Some(Ok(Message::Binary(b)))) => Read2::Binary(b.len()),
                Ok(Some(Ok(Message::Close(f)))) => Read2::Closed(f.map_or(0, |f| f.code.into())),
                Ok(Some(Ok(_))) => continue,
            };
        }
    }

    /// Send `text` and read its echo (within 30 s).
    pub async fn echo(&mut self, text: &str) -> Result<(), String> {
        self.inner
            .send(Message::text(text))
            .await
            .map_err(|e| format!("send on a socket to {}: {e}", self.backend))?;
        match self.read(Duration::from_secs(30)).await {
            Read2::Text(t) if t == text => Ok(()),
            other => Err(format!(
                "echo of {text:?} from {}: got {other:?}",
                self.backend
            )),
        }
    }

    /// Close it (a close frame, then wait for the end).
    pub async fn close(mut self) {
        let _ = self.inner.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(_)) = self.inner.next().await {}
        })
        .await;
    }
}

/// Bytes written by `w`, for the raw-socket cases: `io::Write` over a Vec.
pub fn raw_upgrade_request(path: &str, host: &str, extra: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = write!(
        out,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    out
}

/// Read from `r` until `until` appears in what was read or `limit` bytes; what was read.
pub fn read_until(r: &mut impl Read, until: &[u8], limit: usize) -> io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < limit && !got.windows(until.len()).any(|w| w == until) {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got)
}
