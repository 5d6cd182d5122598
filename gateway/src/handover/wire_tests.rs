use super::*;
use std::net::SocketAddr;

fn backend(id: &str, port: u16, weight: u32, drain: bool) -> BackendConf {
    BackendConf {
        id: id.to_string(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        weight,
        // Odd ports carry a cap, so the round trips cover both.
        max_sessions: (port % 2 == 1).then_some(u32::from(port)),
        max_connections: None,
        drain,
    }
}

fn roundtrip(f: &Frame) -> Frame {
    let mut buf = Vec::new();
    write_frame(&mut buf, f).expect("encodes");
    let mut r = buf.as_slice();
    let back = read_frame(&mut r).expect("decodes");
    assert!(r.is_empty(), "the whole frame was read");
    back
}

fn encoded(f: &Frame) -> Vec<u8> {
    let mut buf = Vec::new();
    write_frame(&mut buf, f).expect("encodes");
    buf
}

fn sample_members() -> Members {
    Members {
        upstream: "app".into(),
        file: vec![backend("b1", 1, 1, false), backend("b2", 2, 3, true)],
        live: vec![
            LiveBackend {
                conf: backend("b1", 1, 1, false),
                state: WireState::Active,
                up: true,
            },
            LiveBackend {
                conf: backend("b2", 2, 3, true),
                state: WireState::Draining {
                    remaining_ms: Some(1_500),
                },
                up: false,
            },
            LiveBackend {
                conf: backend("b9", 9, 0, false),
                state: WireState::Drained,
                up: true,
            },
            LiveBackend {
                conf: backend("b8", 8, 1, true),
                state: WireState::Draining { remaining_ms: None },
                up: true,
            },
        ],
        migrations: vec![WireMigration {
            backend: "b1".into(),
            remaining: 40,
            rate: 200,
        }],
        moved: vec![(u128::MAX - 1, "b2".into())],
    }
}

#[test]
fn every_frame_survives_a_round_trip() {
    let frames = [
        Frame::Hello(Hello {
            pid: 4242,
            clock_ms: 86_400_000,
        }),
        Frame::Members(sample_members()),
        Frame::Pins(Pins {
            upstream: "app".into(),
            names: vec!["b1".into(), "b2".into()],
            records: vec![
                Record {
                    key: 1 << 100,
                    backend: 1,
                    backup: Some(0),
                    age_s: 60,
                    idle_s: 5,
                    placed: true,
                },
                Record {
                    key: 7,
                    backend: 0,
                    backup: None,
                    age_s: 0,
                    idle_s: 0,
                    placed: false,
                },
            ],
        }),
        Frame::Removed(Removed {
            upstream: "learn".into(),
            keys: vec![1, u128::MAX],
        }),
        Frame::End { pins: 12 },
        Frame::Beat,
        Frame::Bye,
        Frame::Refused("another upgrade (pid 7) is taking the state".into()),
    ];
    for f in &frames {
        assert_eq!(&roundtrip(f), f);
    }
}

#[test]
fn a_stream_of_frames_reads_back_in_order_then_closed() {
    let mut buf = Vec::new();
    write_frame(&mut buf, &Frame::Beat).unwrap();
    write_frame(&mut buf, &Frame::End { pins: 3 }).unwrap();
    let mut r = buf.as_slice();
    assert_eq!(read_frame(&mut r).unwrap(), Frame::Beat);
    assert_eq!(read_frame(&mut r).unwrap(), Frame::End { pins: 3 });
    assert!(matches!(read_frame(&mut r), Err(WireError::Closed)));
}

#[test]
fn a_foreign_socket_or_another_version_is_refused_with_a_clear_error() {
    let mut bytes = encoded(&Frame::Hello(Hello {
        pid: 1,
        clock_ms: 0,
    }));
    bytes[5] = b'X'; // first magic byte (after len:4, kind:1)
    let err = read_frame(&mut bytes.as_slice()).unwrap_err();
    assert!(matches!(err, WireError::Magic(_)), "{err}");
    assert!(err.to_string().contains("not a Berth state socket"));

    let mut bytes = encoded(&Frame::Hello(Hello {
        pid: 1,
        clock_ms: 0,
    }));
    bytes[13..15].copy_from_slice(&2u16.to_be_bytes()); // version
    let err = read_frame(&mut bytes.as_slice()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the peer speaks hand-over protocol v2, this Berth v1"
    );
}

#[test]
fn sizes_and_counts_are_bounded_before_anything_is_allocated() {
    let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
    let err = read_frame(&mut huge.as_slice()).unwrap_err();
    assert!(
        matches!(err, WireError::Size(n) if n == MAX_FRAME + 1),
        "{err}"
    );
    let err = read_frame(&mut [0u8, 0, 0, 0].as_slice()).unwrap_err();
    assert!(matches!(err, WireError::Size(0)), "{err}");

    // A REMOVED frame announcing 1,000,000 keys but carrying one.
    let mut bytes = encoded(&Frame::Removed(Removed {
        upstream: "a".into(),
        keys: vec![5],
    }));
    let count_at = 4 + 1 + 2 + 1;
    bytes[count_at..count_at + 4].copy_from_slice(&1_000_000u32.to_be_bytes());
    let err = read_frame(&mut bytes.as_slice()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "REMOVED frame: truncated (16000000 bytes needed, 16 left)"
    );

    // A frame cut short by the peer going away.
    let bytes = encoded(&Frame::Members(sample_members()));
    let cut = &bytes[..bytes.len() - 3];
    let err = read_frame(&mut &cut[..]).unwrap_err();
    assert!(matches!(err, WireError::Io(_)), "{err}");
}

#[test]
fn records_naming_unknown_backends_are_invalid() {
    let f = Frame::Pins(Pins {
        upstream: "app".into(),
        names: vec!["b1".into()],
        records: vec![Record {
            key: 1,
            backend: 0,
            backup: Some(3),
            age_s: 0,
            idle_s: 0,
            placed: false,
        }],
    });
    let err = read_frame(&mut encoded(&f).as_slice()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "PINS frame: a record names backend #0 of 1 names"
    );
}

#[test]
fn newer_senders_may_add_frame_kinds_and_fields() {
    // An unknown kind is reported (and skipped by the receiver), the stream goes on.
    let mut buf = vec![0, 0, 0, 3, 99, 1, 2];
    write_frame(&mut buf, &Frame::Beat).unwrap();
    let mut r = buf.as_slice();
    assert_eq!(read_frame(&mut r).unwrap(), Frame::Unknown(99));
    assert_eq!(read_frame(&mut r).unwrap(), Frame::Beat);

    // Records 4 bytes longer than this version's: the known prefix is read.
    let mut o = Out(Vec::new());
    o.u8(PINS);
    o.str("app");
    o.u16(1);
    o.str("b1");
    o.u16(RECORD_SIZE + 4);
    o.u32(2);
    for key in [10u128, 11] {
        o.u128(key);
        o.u16(0);
        o.u16(NO_BACKUP);
        o.u32(9);
        o.u32(3);
        o.u8(1);
        o.u32(0xdead_beef); // a future field
    }
    let mut framed = (o.0.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&o.0);
    let Frame::Pins(p) = read_frame(&mut framed.as_slice()).unwrap() else {
        panic!("a PINS frame")
    };
    assert_eq!(p.records.len(), 2);
    assert_eq!(
        (p.records[1].key, p.records[1].age_s, p.records[1].idle_s),
        (11, 9, 3)
    );
}
