//! An HTTP/2 client for the tests (the `h2` crate over tokio): h2c with prior knowledge, or h2
//! over TLS (rustls, ALPN `h2`, trusting a [`crate::tls::TestCa`]). One [`H2`] is one
//! connection; its requests may run concurrently as streams of it.
//!
//! ```no_run
//! # let addr = "127.0.0.1:1".parse().unwrap();
//! let rt = berth_tests::h2::runtime();
//! rt.block_on(async {
//!     let h2 = berth_tests::h2::H2::h2c(addr).await.unwrap();
//!     let r = h2.get("/", &[("x-session-id", "s1")]).await.unwrap();
//!     assert_eq!(r.status, 200);
//! });
//! ```
use bytes::Bytes;
use http::{HeaderMap, Request};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A tokio runtime for a test (current thread: the client is light).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// One HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct H2 {
    send: h2::client::SendRequest<Bytes>,
    authority: String,
    scheme: &'static str,
    /// The connection task: ends when the connection does (with its error, if any).
    pub conn: Arc<JoinHandle<Result<(), String>>>,
}

/// A response, body read whole.
#[derive(Debug, Clone)]
pub struct H2Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl H2Response {
    /// The first value of a header, as text (`""` when missing).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// Which demo backend answered.
    pub fn backend(&self) -> &str {
        self.header("x-backend")
    }
}

impl H2 {
    /// h2c with prior knowledge to a plain listener.
    pub async fn h2c(addr: SocketAddr) -> Result<H2, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        H2::handshake(tcp, addr.to_string(), "http").await
    }

    /// h2 over TLS to `addr` with SNI `name`, trusting `ca_pem` (ALPN offers `h2` only).
    pub async fn tls(addr: SocketAddr, name: &str, ca_pem: &str) -> Result<H2, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let tls = tls_connect(tcp, name, ca_pem, &[b"h2"]).await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        if alpn.as_deref() != Some(b"h2") {
            return Err(format!("ALPN chose {alpn:?}, not h2"));
        }
        H2::handshake(tls, format!("{name}:{}", addr.port()), "https").await
    }

    async fn handshake<T>(io: T, authority: String, scheme: &'static str) -> Result<H2, String>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = h2::client::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        let conn = tokio::spawn(async move { conn.await.map_err(|e| e.to_string()) });
        Ok(H2 {
            send,
            authority,
            scheme,
            conn: Arc::new(conn),
        })
    }

    /// `GET path` with `headers` (several with one name are sent as several fields).
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<H2Response, String> {
        self.send("GET", path, headers, None).await
    }

    /// One request; `body` `None` = no body (END_STREAM on the headers).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<H2Response, String> {
        self.send_frames(method, path, headers, body.into_iter().collect())
            .await
    }

    /// One request whose body is sent as one DATA frame per item of `frames`, the last with
    /// END_STREAM (an empty last item: the body ends with an empty DATA frame, as streaming
    /// clients and `curl -T -` do). No frames: no body.
    pub async fn send_frames(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        frames: Vec<Bytes>,
    ) -> Result<H2Response, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}://{}{path}", self.scheme, self.authority));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(()).map_err(|e| e.to_string())?;
        let mut send = self.send.clone().ready().await.map_err(|e| e.to_string())?;
        let (resp, mut stream) = send
            .send_request(req, frames.is_empty())
            .map_err(|e| e.to_string())?;
        let n = frames.len();
        for (i, frame) in frames.into_iter().enumerate() {
            stream
                .send_data(frame, i + 1 == n)
                .map_err(|e| e.to_string())?;
        }
        let resp = resp.await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let (parts, mut recv) = resp.into_parts();
        let mut body = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        Ok(H2Response {
            status,
            headers: parts.headers,
            body: body.into(),
        })
    }
}

/// A TLS client connection trusting `ca_pem`, offering `alpn`.
pub async fn tls_connect(
    tcp: TcpStream,
    name: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name =
        rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}
