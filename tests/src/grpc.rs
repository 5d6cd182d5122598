//! gRPC for the tests, over the `h2` crate: the demo backend's gRPC echo ([`serve_h2c`], on
//! connections that open with the HTTP/2 preface) and a client ([`call`]).
//!
//! gRPC on the wire is HTTP/2 `POST /<service>/<method>` with `content-type: application/grpc`,
//! each message prefixed by a flag byte and a 4-byte big-endian length, and the call's status
//! in the trailers (`grpc-status`, `grpc-message`). Berth never looks inside messages, so the
//! echo's messages are plain bytes rather than protobuf (no code generation, no `protoc`):
//!
//! * `/echo.Echo/Unary`: one message back, `<backend>:<the message>`;
//! * `/echo.Echo/Stream` (server streaming): the request message is a count N; N messages
//!   `<backend>:<i>` back, a few milliseconds apart;
//! * any other method: `grpc-status` 12 (UNIMPLEMENTED), trailers only.
//!
//! Every answer carries the header `x-backend` and the trailers `grpc-status: 0`,
//! `x-backend-trailer: <backend>` and `x-seen-affinity` (Berth's `X-Berth-Affinity`).
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Frame `payload` as one gRPC message.
pub fn frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(0);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// The messages in `body` (whole frames only).
pub fn messages(mut body: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = (&body[1..5]).get_u32() as usize;
        if body.len() < 5 + len {
            break;
        }
        out.push(Bytes::copy_from_slice(&body[5..5 + len]));
        body = &body[5 + len..];
    }
    out
}

/// Serve one connection that opened with the HTTP/2 preface (prior knowledge), as backend
/// `name`, until it ends. Blocking: runs its own single-threaded runtime.
pub fn serve_h2c(stream: std::net::TcpStream, name: String) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        let _ = stream.set_nonblocking(true);
        let Ok(stream) = TcpStream::from_std(stream) else {
            return;
        };
        let Ok(mut conn) = h2::server::handshake(stream).await else {
            return;
        };
        while let Some(Ok((req, respond))) = conn.accept().await {
            let name = name.clone();
            tokio::spawn(async move {
                let _ = answer(req, respond, &name).await;
            });
        }
    });
}

async fn answer(
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    name: &str,
) -> Result<(), h2::Error> {
    let path = req.uri().path().to_string();
    let affinity = req
        .headers()
        .get("x-berth-affinity")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let mut body = req.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let first = messages(&data).into_iter().next().unwrap_or_default();
    let head = Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("x-backend", name)
        .body(())
        .expect("a valid response head");
    let mut trailers = HeaderMap::new();
    let reply: Vec<Bytes> = match path.as_str() {
        "/echo.Echo/Unary" => {
            let mut m = format!("{name}:").into_bytes();
            m.extend_from_slice(&first);
            vec![frame(&m)]
        }
        "/echo.Echo/Stream" => {
            let n: usize = std::str::from_utf8(&first)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            (0..n.min(1000))
                .map(|i| frame(format!("{name}:{i}").as_bytes()))
                .collect()
        }
        _ => {
            let mut only = head;
            let h = only.headers_mut();
            h.insert("grpc-status", "12".parse().expect("a valid value"));
            h.insert(
                "grpc-message",
                "unknown method".parse().expect("a valid value"),
            );
            respond.send_response(only, true)?;
            return Ok(());
        }
    };
    let mut send = respond.send_response(head, false)?;
    for m in reply {
        send.send_data(m, false)?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    trailers.insert("grpc-status", "0".parse().expect("a valid value"));
    let value = |s: &str| s.parse().unwrap_or_else(|_| "-".parse().expect("valid"));
    trailers.insert("x-backend-trailer", value(name));
    trailers.insert("x-seen-affinity", value(&affinity));
    send.send_trailers(trailers)
}

/// The outcome of a call.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status (200 for any gRPC answer).
    pub status: u16,
    pub headers: HeaderMap,
    /// The messages, in order.
    pub messages: Vec<Bytes>,
    /// The trailers; `None` for a trailers-only answer (the status is then in `headers`).
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    /// `grpc-status` from the trailers, or from the headers of a trailers-only answer.
    pub fn grpc_status(&self) -> Option<&str> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
    }

    /// A header of the answer (`""` when missing).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// A trailer (`""` when missing).
    pub fn trailer(&self, name: &str) -> &str {
        self.trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// One call on a new h2c connection to `addr`: `method` (e.g. `/echo.Echo/Unary`) with
/// `metadata` and one request message `payload`.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    metadata: &[(&str, &str)],
    payload: &[u8],
) -> Result<Reply, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (send, conn) = h2::client::handshake(tcp)
        .await
        .map_err(|e| format!("h2c to {addr}: {e}"))?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (n, v) in metadata {
        req = req.header(*n, *v);
    }
    let req = req.body(()).map_err(|e| e.to_string())?;
    let mut send = send.ready().await.map_err(|e| e.to_string())?;
    let (resp, mut stream) = send.send_request(req, false).map_err(|e| e.to_string())?;
    stream
        .send_data(frame(payload), true)
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), resp)
        .await
        .map_err(|_| format!("{method}: no answer in 30 s"))?
        .map_err(|e| format!("{method}: {e}"))?;
    let status = resp.status().as_u16();
    let (parts, mut body) = resp.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("{method}: body: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|e| format!("{method}: trailers: {e}"))?;
    Ok(Reply {
        status,
        headers: parts.headers,
        messages: messages(&data),
        trailers,
    })
}
