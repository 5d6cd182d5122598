use super::*;
use pingora_core::protocols::Peek;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(super) const D: Deadlines = Deadlines {
    header: Duration::from_millis(300),
    idle: Duration::from_millis(300),
};
/// Comfortably past both deadlines.
pub(super) const PAST: Duration = Duration::from_millis(900);

/// A guarded server side and its client, over real loopback TCP.
async fn pair() -> (HeadDeadline, TcpStream) {
    pair_with(D).await
}

async fn pair_with(d: Deadlines) -> (HeadDeadline, TcpStream) {
    let (stream, client) = loopback().await;
    (HeadDeadline::new(stream, d), client)
}

/// A server-side Pingora stream and its client, over real loopback TCP.
pub(super) async fn loopback() -> (Stream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let stream: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(server));
    (stream, client)
}

/// Read until `n` bytes arrived, an error, or EOF.
async fn read_n(s: &mut HeadDeadline, n: usize) -> io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < n {
        let k = s.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        got.extend_from_slice(&buf[..k]);
    }
    Ok(got)
}

/// A read that neither returns data nor fails for `PAST`.
async fn stays_open(s: &mut HeadDeadline) {
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(PAST, s.read(&mut buf)).await;
    assert!(r.is_err(), "the read ended: {r:?}");
}

async fn times_out(s: &mut HeadDeadline) {
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the deadline fired");
    let e = r.expect_err("a timeout error, not EOF");
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn a_silent_new_connection_is_cut() {
    let (mut s, _client) = pair().await;
    times_out(&mut s).await;
}

#[tokio::test]
async fn a_trickled_head_is_cut() {
    let (mut s, mut client) = pair().await;
    let trickle = tokio::spawn(async move {
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if client.write_all(b"X: 1\r\n").await.is_err() {
                break;
            }
        }
    });
    times_out(&mut s).await;
    trickle.abort();
}

#[tokio::test]
async fn a_complete_head_stops_the_clock_and_the_response_restarts_it() {
    // Idle longer than PAST: the head clock, not the idle one, cuts the trickled head.
    let (mut s, mut client) = pair_with(Deadlines {
        header: D.header,
        idle: Duration::from_secs(3),
    })
    .await;
    let head = b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    client.write_all(head).await.unwrap();
    assert_eq!(read_n(&mut s, head.len()).await.unwrap(), head);
    // Waiting for the body or the backend is not timed here.
    stays_open(&mut s).await;
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    // Idle between requests, within keepalive_timeout.
    stays_open(&mut s).await;
    // The next head, trickled, is timed from its first byte.
    client.write_all(b"GET /2 HTTP/1.1\r\n").await.unwrap();
    times_out(&mut s).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_cut_and_a_busy_one_is_not() {
    // A request every 100 ms for longer than the idle timeout, each read waiting for it (the
    // timer is armed): each idle time counts from the previous response, so the connection
    // stays (the one timer fires early, re-arms, never cuts). The idle timeout is 2 s so that
    // a loaded machine's scheduling delays (far below 1.9 s) cannot stretch a 100 ms gap into
    // an idle cut.
    let d = Deadlines {
        header: D.header,
        idle: Duration::from_secs(2),
    };
    let (mut s, mut client) = pair_with(d).await;
    let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let sender = tokio::spawn(async move {
        for _ in 0..25 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.write_all(head).await.unwrap();
        }
        client
    });
    for _ in 0..25 {
        assert_eq!(read_n(&mut s, head.len()).await.unwrap(), head);
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
    }
    let _client = sender.await.unwrap();
    // Then nothing: cut once idle for keepalive_timeout after the last response.
    let t = std::time::Instant::now();
    times_out(&mut s).await;
    let idle = t.elapsed();
    assert!(idle >= d.idle - Duration::from_millis(110), "{idle:?}");
}

#[tokio::test]
async fn a_head_split_over_reads_is_found_whole() {
    // CR LF split between reads, bare LFs, leading empty lines: the head still ends at its
    // empty line and no timeout follows while the response is awaited.
    let (mut s, mut client) = pair().await;
    for part in [
        &b"\r\n\r\nGET / HTTP/1.1\r"[..],
        b"\nHost: x\r\nA: b\r\n\r",
        b"\n",
    ] {
        client.write_all(part).await.unwrap();
        read_n(&mut s, part.len()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stays_open(&mut s).await;
    let (mut s, mut client) = pair().await;
    let head = b"GET / HTTP/1.1\nHost: x\n\n";
    client.write_all(head).await.unwrap();
    read_n(&mut s, head.len()).await.unwrap();
    stays_open(&mut s).await;
    // A line of CRs only is not an empty line's end unless a LF follows.
    let (mut s, mut client) = pair().await;
    let head = b"GET / HTTP/1.1\r\nX: y\r\r";
    client.write_all(head).await.unwrap();
    read_n(&mut s, head.len()).await.unwrap();
    times_out(&mut s).await;
}

#[tokio::test]
async fn interim_responses_keep_waiting_for_the_body_and_101_is_a_tunnel() {
    let (mut s, mut client) = pair().await;
    let head = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\n";
    client.write_all(head).await.unwrap();
    read_n(&mut s, head.len()).await.unwrap();
    s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
    client.write_all(b"bo").await.unwrap();
    assert_eq!(read_n(&mut s, 2).await.unwrap(), b"bo");
    stays_open(&mut s).await;

    let (mut s, mut client) = pair().await;
    let head = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    client.write_all(head).await.unwrap();
    read_n(&mut s, head.len()).await.unwrap();
    s.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        .await
        .unwrap();
    client.write_all(b"\x81\x05hello").await.unwrap();
    assert_eq!(read_n(&mut s, 7).await.unwrap(), b"\x81\x05hello");
    stays_open(&mut s).await;
}

/// A guarded connection that may speak HTTP/2 (TLS with ALPN h2, or an h2c listener).
async fn h2_pair(d: Deadlines) -> (HeadDeadline, TcpStream) {
    let (s, client) = pair_with(d).await;
    let HeadDeadline { inner, .. } = s;
    (HeadDeadline::expecting_preface(inner, d, None), client)
}

#[tokio::test]
async fn after_the_h2_preface_nothing_is_timed_here() {
    let (mut s, mut client) = h2_pair(D).await;
    // The server's SETTINGS may go out before the client's preface: not a response.
    s.write_all(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    // The preface split over two reads.
    client.write_all(&H2_PREFACE[..5]).await.unwrap();
    assert_eq!(read_n(&mut s, 5).await.unwrap(), &H2_PREFACE[..5]);
    assert!(!s.is_h2());
    client.write_all(&H2_PREFACE[5..]).await.unwrap();
    assert_eq!(read_n(&mut s, 19).await.unwrap(), &H2_PREFACE[5..]);
    assert!(s.is_h2());
    // Idle far past both deadlines: the h2 server's own idle timeout decides.
    stays_open(&mut s).await;
    stays_open(&mut s).await;
}

#[tokio::test]
async fn half_a_preface_is_cut_by_the_head_deadline_and_silence_by_the_idle_one() {
    let (mut s, mut client) = h2_pair(Deadlines {
        header: D.header,
        idle: Duration::from_secs(30),
    })
    .await;
    client.write_all(&H2_PREFACE[..10]).await.unwrap();
    times_out(&mut s).await;
    let (mut s, _client) = h2_pair(D).await;
    times_out(&mut s).await;
}

#[tokio::test]
async fn http1_on_a_connection_that_may_speak_h2_is_timed_as_http1() {
    // POST starts like PRI: the departure is found at the second byte.
    let (mut s, mut client) = h2_pair(D).await;
    client.write_all(b"POST / HTTP/1.1\r\n").await.unwrap();
    assert_eq!(read_n(&mut s, 17).await.unwrap(), b"POST / HTTP/1.1\r\n");
    assert!(!s.is_h2());
    times_out(&mut s).await;
    let (mut s, mut client) = h2_pair(Deadlines {
        header: D.header,
        idle: Duration::from_secs(3),
    })
    .await;
    let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    client.write_all(head).await.unwrap();
    assert_eq!(read_n(&mut s, head.len()).await.unwrap(), head);
    stays_open(&mut s).await;
}

#[tokio::test]
async fn the_h2c_peek_stops_where_the_bytes_depart_from_the_preface() {
    let (s, mut client) = h2_pair(D).await;
    let mut peeked = preface::Peeked::new(s);
    // 18 bytes, less than the 24 Pingora asks for: answered, not waited on.
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 24];
    assert!(peeked.try_peek(&mut buf).await.unwrap());
    assert_ne!(&buf, H2_PREFACE);
    let mut got = vec![0u8; 18];
    peeked.read_exact(&mut got).await.unwrap();
    assert_eq!(
        got, b"GET / HTTP/1.0\r\n\r\n",
        "the peeked bytes are read again"
    );
    // A real preface is peeked whole and then read.
    let (s, mut client) = h2_pair(D).await;
    let mut peeked = preface::Peeked::new(s);
    client.write_all(H2_PREFACE).await.unwrap();
    assert!(peeked.try_peek(&mut buf).await.unwrap());
    assert_eq!(&buf, H2_PREFACE);
    let mut got = [0u8; 24];
    peeked.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, H2_PREFACE);
    // Nothing sent: the peek ends with the idle deadline.
    let (s, _client) = h2_pair(D).await;
    let mut peeked = preface::Peeked::new(s);
    let r = tokio::time::timeout(Duration::from_secs(10), peeked.try_peek(&mut buf)).await;
    assert_eq!(
        r.expect("the deadline ended the peek").unwrap_err().kind(),
        io::ErrorKind::TimedOut
    );
}

/// `t` published for the connection `s` until dropped. The registry is keyed by descriptor
/// and shared by every test of this binary: a tunnel left behind would be found by the next
/// test's connection that gets the same descriptor (the proxy withdraws its tunnels when the
/// request ends the same way).
struct Published(i32);

impl Published {
    fn new(s: &HeadDeadline, t: &Arc<Tunnel>) -> Published {
        crate::tunnel::publish(s.inner.id(), t.clone());
        Published(s.inner.id())
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        crate::tunnel::withdraw(self.0);
    }
}

/// A connection whose upgrade request was answered 101, with `t` published for it (until the
/// returned guard is dropped: declare it after `s`).
#[must_use]
async fn upgraded(s: &mut HeadDeadline, client: &mut TcpStream, t: &Arc<Tunnel>) -> Published {
    let published = Published::new(s, t);
    client
        .write_all(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        .await
        .unwrap();
    read_n(s, 60).await.unwrap();
    crate::tunnel::answered(t);
    s.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(s.phase, Phase::Tunnel);
    published
}

#[tokio::test]
async fn a_tunnel_lives_while_either_side_talks_and_ends_when_idle() {
    {
        let (mut s, mut client) = pair().await;
        let t = Arc::new(Tunnel::new(Duration::from_millis(1500)));
        let _published = upgraded(&mut s, &mut client, &t).await;
        // Far past the client deadlines (300 ms) and the idle timeout in all, but never idle
        // that long: the client talks, then only the server does.
        for _ in 0..16 {
            client.write_all(b"x").await.unwrap();
            assert_eq!(read_n(&mut s, 1).await.unwrap(), b"x");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut buf = [0u8; 8];
        for _ in 0..16 {
            s.write_all(b"y").await.unwrap();
            let r = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
            assert!(r.is_err(), "the read ended while the server talked: {r:?}");
        }
        assert_eq!(t.closed(), None);
        // Then silence: the end of the client's stream, for the idle timeout.
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the idle timeout fired")
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(t.closed(), Some(CloseWhy::IdleTimeout));
    }
}

#[tokio::test]
async fn a_tunnel_closed_from_outside_ends_its_reads_and_writes() {
    {
        let (mut s, mut client) = pair().await;
        let t = Arc::new(Tunnel::new(Duration::from_secs(3600)));
        let _published = upgraded(&mut s, &mut client, &t).await;
        let closer = t.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            closer.close(CloseWhy::DrainDeadline);
        });
        // A read waiting for the client wakes up to the end of the stream.
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("woken by the close")
            .unwrap();
        assert_eq!(n, 0);
        let e = s
            .write_all(b"more")
            .await
            .expect_err("writes fail once closed");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(t.closed(), Some(CloseWhy::DrainDeadline));
    }
}

#[tokio::test]
async fn a_refused_upgrade_leaves_a_plain_connection() {
    {
        let (mut s, mut client) = pair().await;
        let t = Arc::new(Tunnel::new(Duration::from_millis(100)));
        let _published = Published::new(&s, &t);
        client
            .write_all(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
            .await
            .unwrap();
        read_n(&mut s, 40).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(s.phase, Phase::Response);
        assert!(s.tunnel.is_none(), "no tunnel after a refused upgrade");
        // Timed as a keep-alive connection again (the idle deadline, 300 ms), not the tunnel's.
        times_out(&mut s).await;
    }
}
