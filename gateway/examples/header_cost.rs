//! Instructions spent on the headers Berth sets on each upstream request, counted under
//! callgrind (machine-load independent). A request head as Pingora parses it (`Host`, one
//! session header) is cloned, as Pingora does for the upstream request, then edited by
//! `headers::forward` — or not (`clone`, the baseline to subtract).
//!
//! ```text
//! cargo build --release -p berth --example header_cost
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/h.out target/release/examples/header_cost forward
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/c.out target/release/examples/header_cost clone
//! ```
//! (summary Ir of forward − clone) / 100,000 = instructions per request.
use berth::headers::forward;
use berth::headers::AffinityHeaders;
use pingora_http::RequestHeader;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "forward".into());
    let mut parsed = RequestHeader::build("GET", b"/", Some(2)).unwrap();
    parsed.append_header("Host", "127.0.0.1:18082").unwrap();
    parsed.append_header("X-Session-Id", "sid-00042").unwrap();
    let signal = AffinityHeaders {
        affinity: "sticky",
        previous: None,
        backup: None,
    };
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let n = 100_000;
    for _ in 0..n {
        let mut up = black_box(&parsed).clone();
        if mode == "forward" {
            forward(&mut up, &signal, true, Some(ip), false).unwrap();
        }
        black_box(&up);
    }
    println!("{mode}: {n} requests");
}
