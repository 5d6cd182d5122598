//! [`DnsServer`]: a DNS server of the test's own on 127.0.0.1 (UDP, a free port), built on
//! hickory-server, answering one name's A and AAAA records from a set the test changes while
//! it runs. Any other name is NXDOMAIN; the name with an empty set answers without records.
//! It runs on a thread of its own and is stopped by its handle ([`DnsServer::stop`], or when
//! dropped): its socket is closed, so a resolver asking it gets no answer.
use hickory_proto::op::{Header, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// TTL of the records it serves, in seconds.
pub const TTL: u32 = 1;

/// What the server answers.
#[derive(Debug)]
struct Zone {
    name: LowerName,
    addrs: Vec<IpAddr>,
}

/// A running DNS server. Stopped (socket closed, thread joined) by [`DnsServer::stop`] or drop.
#[derive(Debug)]
pub struct DnsServer {
    /// Where it answers (UDP).
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    /// Serve `name` (e.g. `app.berth.test.`) with `addrs` on 127.0.0.1, a free UDP port.
    pub fn start(name: &str, addrs: &[IpAddr]) -> DnsServer {
        let name = Name::from_str(name).unwrap_or_else(|e| panic!("DNS name {name:?}: {e}"));
        let zone = Arc::new(Mutex::new(Zone {
            name: LowerName::from(name),
            addrs: addrs.to_vec(),
        }));
        let queries = Arc::new(AtomicU64::new(0));
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        let addr = socket.local_addr().expect("a bound socket has an address");
        socket
            .set_nonblocking(true)
            .expect("non-blocking UDP socket");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handler = Handler {
            zone: zone.clone(),
            queries: queries.clone(),
        };
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(async move {
                let mut server = ServerFuture::new(handler);
                let socket = tokio::net::UdpSocket::from_std(socket).expect("a tokio UDP socket");
                server.register_socket(socket);
                let _ = stopped.await;
                let _ = server.shutdown_gracefully().await;
            });
        });
        DnsServer {
            addr,
            zone,
            queries,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Answer with `addrs` from now on (empty: the name has no records).
    pub fn set(&self, addrs: &[IpAddr]) {
        self.zone.lock().unwrap_or_else(|p| p.into_inner()).addrs = addrs.to_vec();
    }

    /// Queries answered so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Stop answering: the socket is closed when this returns.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Handler {
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(true);
        let Ok(info) = request.request_info() else {
            header.set_response_code(ResponseCode::FormErr);
            return header.into();
        };
        let (known, records) = {
            let zone = self.zone.lock().unwrap_or_else(|p| p.into_inner());
            let known = *info.query.name() == zone.name;
            let name = Name::from(info.query.name().clone());
            let records: Vec<Record> = zone
                .addrs
                .iter()
                .filter_map(|ip| match (ip, info.query.query_type()) {
                    (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
                    (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
                    _ => None,
                })
                .filter(|_| known)
                .map(|rdata| Record::from_rdata(name.clone(), TTL, rdata))
                .collect();
            (known, records)
        };
        if !known {
            header.set_response_code(ResponseCode::NXDomain);
        }
        self.queries.fetch_add(1, Ordering::Relaxed);
        let message = MessageResponseBuilder::from_message_request(request).build(
            header,
            records.iter(),
            [],
            [],
            [],
        );
        match response.send_response(message).await {
            Ok(sent) => sent,
            Err(_) => header.into(),
        }
    }
}
