//! Issue #3, must-show 6: the admin API refuses missing or wrong tokens (401) and bad input
//! (400 with a message, 404 unknown backend/upstream, 409 duplicate id, 405 wrong method), and
//! a refused request changes nothing. Without a configured token `/admin/*` is 403 while
//! `/metrics` and `/healthz` stay open.
use berth_tests::admin::{BackendInfo, TOKEN};
use berth_tests::sessions;
use berth_tests::{config, Backend, Client, Gateway, Request, Response};

fn start() -> (Vec<Backend>, Gateway) {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start_with_admin(&config::header_app(&specs, &[]));
    // Some pinned sessions, so a wrongly accepted migrate/drain/delete would show.
    sessions::open(&gw, &sessions::ids(0, 60), 4);
    (backends, gw)
}

/// The response carries `{"error": "<non-empty message>"}`.
fn check_error_body(what: &str, r: &Response) {
    let msg = r
        .json()
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string));
    assert!(
        msg.as_deref().is_some_and(|m| !m.trim().is_empty()),
        "{what}: want a JSON {{\"error\": message}} body: {}",
        r.summary()
    );
}

#[test]
fn missing_or_wrong_tokens_are_refused_and_change_nothing() {
    let (backends, gw) = start();
    let before = gw.backends_json();
    let spare = Backend::start("b9");
    let add = format!(r#"{{"id":"b9","addr":"{}"}}"#, spare.addr);
    let calls: Vec<(&str, String, Option<&str>)> = vec![
        ("GET", "/admin/backends".into(), None),
        ("GET", "/admin/backends/b1".into(), None),
        ("POST", "/admin/backends".into(), Some(add.as_str())),
        ("DELETE", "/admin/backends/b1".into(), None),
        ("POST", "/admin/backends/b1/drain".into(), None),
        ("POST", "/admin/backends/b2/undrain".into(), None),
        ("POST", "/admin/backends/b1/migrate".into(), None),
        ("GET", format!("/admin/sessions/{}", sessions::id(0)), None),
    ];
    let bad_auth: [Option<&str>; 7] = [
        None,
        Some("Bearer wrong-token"),
        Some("Bearer "),
        Some("Bearer test-token-and-more"),
        Some(TOKEN),
        Some("Basic dGVzdC10b2tlbjo="),
        Some("Token test-token"),
    ];
    for (method, path, body) in &calls {
        for auth in bad_auth {
            let r = gw.admin_send(method, path, *body, auth);
            let what = format!("{method} {path} with Authorization {auth:?}");
            assert_eq!(r.status, 401, "{what}: {}", r.summary());
            check_error_body(&what, &r);
        }
    }
    assert_eq!(
        gw.backends_json(),
        before,
        "refused calls changed GET /admin/backends"
    );
    drop(backends);
}

/// An admin call: method, path, body.
type Call = (&'static str, String, Option<String>);

#[test]
fn bad_input_is_refused_with_a_message_and_changes_nothing() {
    let (_backends, gw) = start();
    let before = gw.backends_json();
    let rows = BackendInfo::list_from_json(&before).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 3, "{before}");
    // One backend by id: the same object as in the list.
    let r = gw.admin("GET", "/admin/backends/b2", None);
    assert_eq!(r.status, 200, "{}", r.summary());
    let one = r
        .json()
        .and_then(|v| BackendInfo::from_json(&v))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(Some(&one), rows.iter().find(|b| b.id == "b2"));

    let spare = Backend::start("spare");
    let b1_addr = rows[0].addr.clone();
    let ok_addr = spare.addr.to_string();
    let add = |body: String| ("POST", "/admin/backends".to_string(), Some(body));
    let cases: Vec<(u16, Call)> = vec![
        (400, add("{".into())),
        (400, add("not json".into())),
        (400, add("[]".into())),
        (400, add("{}".into())),
        (400, add(r#"{"id":"b5"}"#.into())),
        (400, add(format!(r#"{{"addr":"{ok_addr}"}}"#))),
        (400, add(r#"{"id":"b5","addr":"not-an-address"}"#.into())),
        (400, add(r#"{"id":"b5","addr":"127.0.0.1"}"#.into())),
        (400, add(r#"{"id":"b5","addr":"127.0.0.1:99999"}"#.into())),
        (
            400,
            add(format!(r#"{{"id":"b5","addr":"{ok_addr}","weight":-1}}"#)),
        ),
        (
            400,
            add(format!(r#"{{"id":"b5","addr":"{ok_addr}","weight":"x"}}"#)),
        ),
        (400, add(format!(r#"{{"id":"b 5!","addr":"{ok_addr}"}}"#))),
        (400, add(format!(r#"{{"id":"","addr":"{ok_addr}"}}"#))),
        (409, add(format!(r#"{{"id":"b1","addr":"{ok_addr}"}}"#))),
        (409, add(format!(r#"{{"id":"b1","addr":"{b1_addr}"}}"#))),
        (
            404,
            add(format!(
                r#"{{"upstream":"nope","id":"b5","addr":"{ok_addr}"}}"#
            )),
        ),
        (404, ("GET", "/admin/backends/zz".into(), None)),
        (404, ("DELETE", "/admin/backends/zz".into(), None)),
        (404, ("POST", "/admin/backends/zz/drain".into(), None)),
        (404, ("POST", "/admin/backends/zz/undrain".into(), None)),
        (404, ("POST", "/admin/backends/zz/migrate".into(), None)),
        (
            400,
            ("POST", "/admin/backends/b1/drain".into(), Some("{".into())),
        ),
        (
            400,
            (
                "POST",
                "/admin/backends/b1/drain".into(),
                Some(r#"{"deadline":"soon"}"#.into()),
            ),
        ),
        (
            400,
            (
                "POST",
                "/admin/backends/b1/drain".into(),
                Some(r#"{"deadline":5}"#.into()),
            ),
        ),
        (
            400,
            (
                "POST",
                "/admin/backends/b1/migrate".into(),
                Some("{".into()),
            ),
        ),
        (
            400,
            (
                "POST",
                "/admin/backends/b1/migrate".into(),
                Some(r#"{"count":-1}"#.into()),
            ),
        ),
        (
            400,
            (
                "POST",
                "/admin/backends/b1/migrate".into(),
                Some(r#"{"count":"x"}"#.into()),
            ),
        ),
        (
            400,
            (
                "POST",
                "/admin/backends/b1/migrate".into(),
                Some(r#"{"rate":0}"#.into()),
            ),
        ),
        (404, ("GET", "/admin/sessions/no-such-session".into(), None)),
        (404, ("GET", "/admin/nothing-here".into(), None)),
        (404, ("GET", "/admin/backends/b1/nothing".into(), None)),
        (405, ("PUT", "/admin/backends".into(), Some("{}".into()))),
        (405, ("DELETE", "/admin/backends".into(), None)),
        (
            400,
            ("PATCH", "/admin/backends/b1".into(), Some("{}".into())),
        ),
        (
            400,
            (
                "PATCH",
                "/admin/backends/b1".into(),
                Some(r#"{"max_sessions": 0}"#.into()),
            ),
        ),
        (
            400,
            (
                "PATCH",
                "/admin/backends/b1".into(),
                Some(r#"{"colour": 1}"#.into()),
            ),
        ),
        (405, ("PATCH", "/admin/backends".into(), Some("{}".into()))),
        (405, ("GET", "/admin/backends/b1/drain".into(), None)),
        (405, ("DELETE", "/admin/backends/b1/migrate".into(), None)),
        (405, ("POST", "/admin/sessions/x".into(), None)),
    ];
    let mut wrong = Vec::new();
    for (want, (method, path, body)) in &cases {
        let r = gw.admin(method, path, body.as_deref());
        let what = format!("{method} {path} {body:?}");
        if r.status != *want {
            wrong.push(format!("{what}: want {want}, got {}", r.summary()));
        } else if *want != 405 && path.starts_with("/admin/backends") {
            check_error_body(&what, &r);
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases:\n  {}",
        wrong.len(),
        cases.len(),
        wrong.join("\n  ")
    );
    assert_eq!(
        gw.backends_json(),
        before,
        "refused calls changed GET /admin/backends"
    );
}

#[test]
fn without_a_configured_token_the_admin_api_is_forbidden() {
    let backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start(&config::header_app(&specs, &[]));
    for auth in [
        None,
        Some("Bearer ".to_string()),
        Some(format!("Bearer {TOKEN}")),
    ] {
        for (method, path) in [
            ("GET", "/admin/backends"),
            ("POST", "/admin/backends/b1/drain"),
        ] {
            let r = gw.admin_send(method, path, None, auth.as_deref());
            assert_eq!(
                r.status,
                403,
                "{method} {path} ({auth:?}), no token configured: {}",
                r.summary()
            );
        }
    }
    let mut admin = Client::new(gw.admin_addr);
    assert_eq!(admin.get("/healthz").status, 200);
    assert_eq!(admin.get("/metrics").status, 200);
    // And an empty token counts as none.
    let gw = Gateway::start_with_env(
        &config::header_app(&specs, &[]),
        &[("BERTH_ADMIN_TOKEN", "")],
    );
    let r = gw.admin_send("GET", "/admin/backends", None, Some("Bearer "));
    assert_eq!(r.status, 403, "empty BERTH_ADMIN_TOKEN: {}", r.summary());
}

#[test]
fn a_token_from_a_custom_env_var() {
    let backends = Backend::start_many(2);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let yaml = config::set(
        &config::header_app(&specs, &[]),
        "admin.token_env",
        "MY_BERTH_TOKEN",
    );
    let gw = Gateway::start_with_env(&yaml, &[("MY_BERTH_TOKEN", "s3cret")]);
    let r = gw.admin_send("GET", "/admin/backends", None, Some("Bearer s3cret"));
    assert_eq!(r.status, 200, "{}", r.summary());
    let r = gw.admin_send(
        "GET",
        "/admin/backends",
        None,
        Some(&format!("Bearer {TOKEN}")),
    );
    assert_eq!(r.status, 401, "{}", r.summary());
}

#[test]
fn with_two_upstreams_an_ambiguous_id_needs_the_upstream() {
    let backends = Backend::start_many(2);
    let spare = Backend::start("spare");
    let app = config::header_app(&[backends[0].spec()], &[]);
    let doc: serde_yaml::Value = serde_yaml::from_str(&app).expect("yaml");
    let mut api = doc["upstreams"]["app"].clone();
    api["backends"][0]["addr"] = backends[1].addr.to_string().into();
    let mut yaml = config::set(
        &app,
        "upstreams.api",
        &serde_yaml::to_string(&api).expect("yaml"),
    );
    yaml = config::set(
        &yaml,
        "routes",
        "[{host: api.example, path_prefix: /, upstream: api}, {host: '*', path_prefix: /, upstream: app}]",
    );
    let gw = Gateway::start_with_admin(&yaml);
    let rows = gw.backends();
    let mut seen: Vec<(String, String)> = rows
        .iter()
        .map(|b| (b.upstream.clone(), b.id.clone()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("api".to_string(), "b1".to_string()),
            ("app".into(), "b1".into())
        ]
    );

    let r = gw.admin("GET", "/admin/backends/b1", None);
    assert_eq!(
        r.status,
        400,
        "ambiguous id without ?upstream: {}",
        r.summary()
    );
    check_error_body("ambiguous id", &r);
    let r = gw.admin("GET", "/admin/backends/b1?upstream=api", None);
    assert_eq!(r.status, 200, "{}", r.summary());
    let one = r
        .json()
        .and_then(|v| BackendInfo::from_json(&v))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (one.upstream.as_str(), one.addr),
        ("api", backends[1].addr.to_string())
    );
    let r = gw.admin("GET", "/admin/backends/b1?upstream=nope", None);
    assert_eq!(r.status, 404, "unknown upstream: {}", r.summary());

    // Adding needs the upstream when there are two.
    let body = format!(r#"{{"id":"b7","addr":"{}"}}"#, spare.addr);
    let r = gw.admin("POST", "/admin/backends", Some(&body));
    assert_eq!(
        r.status,
        400,
        "POST without upstream, two upstreams: {}",
        r.summary()
    );
    let body = format!(r#"{{"upstream":"api","id":"b7","addr":"{}"}}"#, spare.addr);
    let r = gw.admin("POST", "/admin/backends", Some(&body));
    assert_eq!(r.status, 201, "{}", r.summary());
    // The new backend serves the api upstream only.
    let mut c = gw.client();
    let api_homes: Vec<String> = (0..40)
        .map(|i| {
            let r = c.send(&sessions::request(&sessions::id(i), "/").header("Host", "api.example"));
            assert_eq!(r.status, 200, "{}", r.summary());
            r.backend().to_string()
        })
        .collect();
    assert!(
        api_homes.iter().any(|h| h == "spare"),
        "b7 (the spare) takes api sessions: {api_homes:?}"
    );
    let r = c.send(&Request::get("/").header(sessions::HEADER, "app-1"));
    assert_eq!(r.backend(), "b1", "{}", r.summary());
}
