use super::*;
use crate::testing::{FakeRequest, FakeResponse};
use crate::{Reason, Registry};
use std::sync::{Arc, Mutex};

type Log = Arc<Mutex<Vec<(usize, bool, Option<u64>)>>>;

/// A built-in plugin from its YAML settings.
fn build(yaml: &str) -> Box<dyn AffinityPlugin> {
    Registry::builtin().build_str(yaml, "app").unwrap()
}

/// `session_key(value)` (admin look-ups) must equal the key the request path derives.
#[test]
fn session_key_matches_the_request_key() {
    let session = |p: &dyn AffinityPlugin, req: &FakeRequest| match p.key(req) {
        KeyOutcome::Key(Affinity::Session(k)) => k,
        other => panic!("expected a session key, got {other:?}"),
    };
    let header = build("type: header\nname: X-Session-Id");
    let req = FakeRequest::new().header("x-session-id", "abc");
    assert_eq!(header.session_key(b"abc"), Some(session(&*header, &req)));
    assert_eq!(header.session_key(b""), None);

    let learn = build("type: cookie\nmode: learn\nname: JSESSIONID");
    let req = FakeRequest::new().header("cookie", "a=1; JSESSIONID=s42");
    assert_eq!(learn.session_key(b"s42"), Some(session(&*learn, &req)));

    let ip = build("type: ip\nipv4_prefix: 24");
    let req = FakeRequest::new().client("10.1.2.3");
    assert_eq!(ip.session_key(b"10.1.2.200"), Some(session(&*ip, &req)));
    assert_eq!(ip.session_key(b"not an ip"), None);

    let insert = build("type: cookie\nkeys: [{id: k1, secret: 0123456789abcdef0123456789abcdef}]");
    assert_eq!(insert.session_key(b"v1.k1.b1.1.x"), None);
}

/// A chain may skip the response hook only when no plugin has one: `header` and `ip`
/// have none (their `on_response` adds nothing and pins nothing, even for the session
/// they decided), a cookie plugin and any plugin that does not say otherwise do.
#[test]
fn only_chains_without_response_hooks_skip_responses() {
    let header = || build("type: header\nname: X-Session-Id");
    let ip = || build("type: ip");
    let cookie = || build("type: cookie\nmode: learn\nname: JSESSIONID");
    let d = DecisionView {
        upstream: "app",
        backend: "b1",
        reason: Reason::New,
        decided_by_me: true,
        now_unix: 50,
        key_expires: None,
        session: Some(SessionKey(7)),
        tls: false,
        connection: None,
    };
    for quiet in [header(), ip()] {
        assert!(!quiet.sees_responses(), "{}", quiet.name());
        let mut resp = FakeResponse::new().header("set-cookie", "JSESSIONID=s1");
        assert_eq!(quiet.on_response(&d, &mut resp), None, "{}", quiet.name());
        assert!(resp.added.is_empty(), "{}", quiet.name());
    }
    assert!(!Chain::new(vec![header(), ip()]).sees_responses());
    assert!(Chain::new(vec![header(), cookie()]).sees_responses());
    let log = Log::default();
    assert!(chain(&[KeyOutcome::Skip], &log).sees_responses());
}

/// Answers with a fixed outcome and logs what `on_response` shows it.
struct Probe {
    id: usize,
    outcome: KeyOutcome<'static>,
    log: Log,
}

impl AffinityPlugin for Probe {
    fn name(&self) -> &str {
        "probe"
    }
    fn key<'r>(&self, _req: &'r dyn RequestView) -> KeyOutcome<'r> {
        self.outcome
    }
    fn on_response(&self, d: &DecisionView<'_>, _: &mut dyn ResponseView) -> Option<SessionKey> {
        let entry = (self.id, d.decided_by_me, d.key_expires);
        self.log.lock().expect("test lock").push(entry);
        d.decided_by_me.then_some(SessionKey(self.id as u128))
    }
}

fn chain(outcomes: &[KeyOutcome<'static>], log: &Log) -> Chain {
    let probes = outcomes.iter().enumerate().map(|(id, &outcome)| {
        let log = log.clone();
        Box::new(Probe { id, outcome, log }) as Box<dyn AffinityPlugin>
    });
    Chain::new(probes.collect())
}

const TOKEN: Affinity<'static> = Affinity::Backend {
    name: "b1",
    key: SessionKey(1),
    expires: 99,
};

#[test]
fn first_key_wins_and_invalids_are_reported() {
    let log = Log::default();
    let c = chain(
        &[
            KeyOutcome::Skip,
            KeyOutcome::Invalid(Invalid::Expired),
            KeyOutcome::Key(TOKEN),
            KeyOutcome::Key(Affinity::Session(SessionKey(2))),
        ],
        &log,
    );
    let req = FakeRequest::new();
    let r = c.key(&req);
    assert_eq!(r.affinity, Some(TOKEN));
    assert_eq!(r.decided_by, Some(2));
    assert_eq!(r.invalid, Some((1, Invalid::Expired)));
    assert_eq!(r.key_expires(), Some(99));
    assert_eq!(TOKEN.session_key(), Some(SessionKey(1)));
    let none = chain(&[KeyOutcome::Skip], &log).key(&req);
    assert_eq!((none.affinity, none.key_expires()), (None, None));
    assert_eq!(format!("{c:?}"), "Chain { plugins: [AffinityPlugin(probe), AffinityPlugin(probe), AffinityPlugin(probe), AffinityPlugin(probe)], sees_responses: true }");
}

#[test]
fn key_expires_is_shown_to_the_decider_only() {
    let log = Log::default();
    let c = chain(
        &[KeyOutcome::Skip, KeyOutcome::Key(TOKEN), KeyOutcome::Skip],
        &log,
    );
    let d = DecisionView {
        upstream: "app",
        backend: "b1",
        reason: Reason::Sticky,
        decided_by_me: true,
        now_unix: 50,
        key_expires: Some(99),
        session: None,
        tls: false,
        connection: None,
    };
    let mut pinned = Vec::new();
    let no_panic = |i| panic!("plugin {i} panicked");
    c.on_response(
        &d,
        Some(1),
        &mut FakeResponse::new(),
        |k, _| pinned.push(k),
        no_panic,
    );
    let log = log.lock().expect("test lock").clone();
    assert_eq!(
        log,
        [(0, false, None), (1, true, Some(99)), (2, false, None)]
    );
    assert_eq!(pinned, [SessionKey(1)]);
}

/// Panics on a request with `x-panic`, in `key` and in `on_response`.
struct Panicky;

impl AffinityPlugin for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }
    fn key<'r>(&self, req: &'r dyn RequestView) -> KeyOutcome<'r> {
        if req.header("x-panic").is_some() {
            panic!("test plugin asked to panic");
        }
        KeyOutcome::Key(Affinity::Session(SessionKey(1)))
    }
    fn on_response(&self, d: &DecisionView<'_>, _: &mut dyn ResponseView) -> Option<SessionKey> {
        if d.backend == "boom" {
            panic!("test plugin asked to panic");
        }
        None
    }
}

#[test]
fn a_panicking_plugin_is_caught_and_counts_as_no_key() {
    let header = build("type: header\nname: X-Session-Id");
    let c = Chain::new(vec![Box::new(Panicky), header]);
    let req = FakeRequest::new()
        .header("x-panic", "1")
        .header("x-session-id", "s");
    let r = c.key(&req);
    assert_eq!(r.panicked, Some(0));
    assert_eq!(r.decided_by, Some(1), "the next plugin decides");
    // And the plugin keeps working for the next requests.
    let plain = FakeRequest::new();
    for _ in 0..1000 {
        let r = c.key(&plain);
        assert_eq!((r.panicked, r.decided_by), (None, Some(0)));
    }
    let d = DecisionView {
        upstream: "app",
        backend: "boom",
        reason: Reason::New,
        decided_by_me: false,
        now_unix: 1,
        key_expires: None,
        session: None,
        tls: false,
        connection: None,
    };
    let mut panicked = Vec::new();
    let mut resp = FakeResponse::new();
    c.on_response(&d, Some(0), &mut resp, |_, _| {}, |i| panicked.push(i));
    assert_eq!(panicked, [0]);
}
