//! `berth-ws <ws://host:port/path> [-H 'Name: value']...` — a tiny WebSocket client for `make
//! run`'s `/ws` demo: prints the first message (the demo backend's name) and the `101`'s
//! `X-Seen-Affinity`, then sends each line read from stdin and prints what comes back.
use berth_tests::websocket::{self as ws, Read2};
use futures_util::SinkExt;
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(url) = args.first() else {
        eprintln!("usage: berth-ws ws://localhost:8080/ws [-H 'X-Session-Id: alice']...");
        return ExitCode::from(2);
    };
    let Some(rest) = url.strip_prefix("ws://") else {
        eprintln!("berth-ws: only ws:// URLs");
        return ExitCode::from(2);
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let Some(addr) = authority.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        eprintln!("berth-ws: cannot resolve {authority}");
        return ExitCode::FAILURE;
    };
    let mut headers = Vec::new();
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next().and_then(|h| h.split_once(':'))) {
            ("-H", Some((n, v))) => headers.push((n.trim().to_string(), v.trim().to_string())),
            _ => {
                eprintln!("berth-ws: expected -H 'Name: value', got {a:?}");
                return ExitCode::from(2);
            }
        }
    }
    berth_tests::h2::runtime().block_on(async move {
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (&**n, &**v)).collect();
        let mut s = match ws::connect(addr, path, &h).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("berth-ws: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "connected to {} (X-Berth-Affinity: {}); type lines to echo, Ctrl-D to quit",
            s.backend,
            s.header("x-seen-affinity")
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
        std::thread::spawn(move || {
            for line in std::io::stdin().lines().map_while(Result::ok) {
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = rx.recv().await {
            if s.inner.send(Message::text(line)).await.is_err() {
                break;
            }
            match s.read(Duration::from_secs(30)).await {
                Read2::Text(t) => println!("< {t}"),
                other => {
                    println!("< {other:?}");
                    break;
                }
            }
        }
        s.close().await;
        ExitCode::SUCCESS
    })
}
