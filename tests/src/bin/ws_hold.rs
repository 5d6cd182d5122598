//! `berth-ws-hold <addr> <sockets> <hold-seconds>` — the load of `make bench-websocket`
//! (conf/bench/websocket.sh): opens `sockets` WebSockets to `ws://<addr>/ws` (200 handshakes in
//! flight at a time), checks each one's first message (the demo backend's name), prints
//! `HELD <open> <failed>`, keeps them all idle for `hold-seconds`, then checks that each still
//! echoes and prints `ECHOED <ok> <failed>`.
use berth_tests::websocket as ws;
use futures_util::{stream, StreamExt};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(n), Some(hold)) = (
        args.first().and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(1).and_then(|a| a.parse::<usize>().ok()),
        args.get(2).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: berth-ws-hold <ip:port> <sockets> <hold-seconds>");
        return ExitCode::from(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let results: Vec<_> = stream::iter(0..n)
            .map(|_| ws::connect(addr, "/ws", &[]))
            .buffer_unordered(200)
            .collect()
            .await;
        let mut open = Vec::with_capacity(n);
        let mut failed = 0;
        for r in results {
            match r {
                Ok(s) => open.push(s),
                Err(e) => {
                    if failed == 0 {
                        eprintln!("berth-ws-hold: first failure: {e}");
                    }
                    failed += 1;
                }
            }
        }
        println!("HELD {} {failed}", open.len());
        tokio::time::sleep(Duration::from_secs(hold)).await;
        let mut ok = 0;
        let mut bad = 0;
        for s in open.iter_mut() {
            match s.echo("still there").await {
                Ok(()) => ok += 1,
                Err(_) => bad += 1,
            }
        }
        println!("ECHOED {ok} {bad}");
        ExitCode::SUCCESS
    })
}
