//! Issue #5, must-show: the dashboard in headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed on demand).
//!
//! Berth with three demo backends (weights 1, 1, 2) and 90 sticky header sessions. The test
//! loads `/` on the admin listener, is refused with a wrong token, enters the right one, and
//! checks every number the page shows (health, state, weight, sessions, active sessions, cap,
//! ring share, total)
//! against `GET /admin/backends`. It clicks "Drain" on the busiest backend and sees the state
//! change both in the page and in the API; then "Undrain". A screenshot of the drained view is
//! saved under `target/test-output/dashboard/` (the path is printed).
use berth_tests::browser::Browser;
use berth_tests::sessions;
use berth_tests::{admin, config, tally, test_output_dir, wait_for, Backend, Gateway};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The page polls every 2 s; allow a few polls (and a slow, shared machine).
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Every backend row the page shows, read from the DOM as the user sees it (text content).
const READ_ROWS: &str = r#"
const rows = {};
for (const tr of document.querySelectorAll("tr[data-backend]")) {
  const cell = (f) => tr.querySelector(`[data-field="${f}"]`).textContent.trim();
  const button = tr.querySelector("button");
  rows[tr.dataset.upstream + "/" + tr.dataset.backend] = {
    health: cell("health"), state: cell("state"), weight: cell("weight"),
    sessions: cell("sessions"), active: cell("active"), cap: cell("cap"), share: cell("share"),
    button: button ? button.textContent : "",
  };
}
const total = document.querySelector('[data-field="total-sessions"]');
return { rows, total: total ? total.textContent.trim() : null,
         message: document.getElementById("message").textContent,
         ready: document.getElementById("ready").textContent,
         login: !document.getElementById("login").classList.contains("hidden") };
"#;

/// What the page should show for `GET /admin/backends` (same shape as [`READ_ROWS`]' rows).
fn expected_rows(api: &Value) -> (BTreeMap<String, Value>, u64) {
    let mut rows = BTreeMap::new();
    let mut total = 0;
    for b in api["backends"].as_array().expect("backends array") {
        let s = |k: &str| {
            b[k].as_str()
                .unwrap_or_else(|| panic!("{k} in {b}"))
                .to_string()
        };
        let n = |k: &str| b[k].as_u64().unwrap_or_else(|| panic!("{k} in {b}"));
        let share = b["ring_share"].as_f64().expect("ring_share");
        total += n("sessions");
        let button = if s("state") == "active" {
            "Drain"
        } else {
            "Undrain"
        };
        rows.insert(
            format!("{}/{}", s("upstream"), s("id")),
            json!({
                "health": s("health"), "state": s("state"), "weight": n("weight").to_string(),
                "sessions": n("sessions").to_string(),
                "active": n("active_sessions").to_string(),
                "cap": b["max_sessions"].as_u64().map_or("–".to_string(), |c| c.to_string()),
                "share": format!("{:.1}%", share * 100.0),
                "button": button,
            }),
        );
    }
    (rows, total)
}

/// Poll the page until its rows equal what `GET /admin/backends` says at the same moment.
fn wait_page_matches_api(browser: &mut Browser, gw: &Gateway, what: &str) -> (Value, Value) {
    let mut last = (Value::Null, Value::Null);
    let ok = wait_for(PAGE_TIMEOUT, Duration::from_millis(200), || {
        let api = gw.backends_json();
        let page = browser.execute(READ_ROWS, json!([]));
        let (want, total) = expected_rows(&api);
        let rows: BTreeMap<String, Value> = page["rows"]
            .as_object()
            .map(|m| m.clone().into_iter().collect())
            .unwrap_or_default();
        let same = rows == want && page["total"] == json!(total.to_string());
        last = (page, api);
        same.then_some(())
    });
    assert!(
        ok.is_some(),
        "{what}: the page does not show what GET /admin/backends says within {PAGE_TIMEOUT:?}\n\
         page: {}\napi: {}",
        last.0,
        last.1
    );
    last
}

#[test]
fn dashboard_shows_the_backends_and_drains_one() {
    let backends = Backend::start_many(3);
    let specs: Vec<_> = backends.iter().map(Backend::spec).collect();
    let gw = Gateway::start_with_admin(&config::header_app(
        &specs,
        &[
            ("upstreams.app.backends.2.weight", "2"),
            ("upstreams.app.backends.0.max_sessions", "500"),
        ],
    ));
    let placed = sessions::open(&gw, &sessions::ids(0, 90), 4);
    let counts = tally(placed.iter().map(|p| p.home.as_str()));
    let (busiest, n) = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(b, n)| (b.clone(), *n))
        .expect("sessions were placed");
    // A second visit to each session: still sticky, and nothing new is pinned.
    for (p, r) in placed
        .iter()
        .zip(sessions::visit(&gw, &sessions::ids(0, 90), 4, "/again"))
    {
        sessions::check_sticky(&r, &p.home).unwrap_or_else(|e| panic!("{}: {e}", p.id));
    }

    let mut browser = Browser::start(1280, 720);
    let url = format!("http://{}/", gw.admin_addr);
    browser.goto(&url);

    // A wrong token is refused: the page says so and asks again.
    let input = browser.wait_find("#token", PAGE_TIMEOUT);
    browser.send_keys(&input, "not-the-token");
    let save = browser.wait_find("#save", PAGE_TIMEOUT);
    browser.click(&save);
    let refused = wait_for(PAGE_TIMEOUT, Duration::from_millis(100), || {
        let page = browser.execute(READ_ROWS, json!([]));
        (page["login"] == json!(true) && page["message"].as_str()?.contains("refused"))
            .then_some(page)
    });
    assert!(
        refused.is_some(),
        "a wrong token was not refused on the page"
    );

    // The right token: the table appears and matches the API.
    let input = browser.wait_find("#token", PAGE_TIMEOUT);
    browser.send_keys(&input, admin::TOKEN);
    let save = browser.wait_find("#save", PAGE_TIMEOUT);
    browser.click(&save);
    browser.wait_find("tr[data-backend]", PAGE_TIMEOUT);
    let (page, api) = wait_page_matches_api(&mut browser, &gw, "after login");
    println!("page: {page}\napi: {api}");
    let row = |page: &Value, id: &str| page["rows"][format!("app/{id}")].clone();
    assert_eq!(row(&page, &busiest)["sessions"], json!(n.to_string()));
    assert_eq!(page["total"], json!("90"), "{page}");
    assert_eq!(row(&page, "b3")["weight"], json!("2"), "{page}");
    assert_eq!(page["ready"], json!("ready"), "{page}");
    let shares: Vec<f64> = ["b1", "b2", "b3"]
        .iter()
        .map(|id| {
            row(&page, id)["share"]
                .as_str()
                .and_then(|s| s.trim_end_matches('%').parse().ok())
                .unwrap_or_else(|| panic!("share of {id}: {page}"))
        })
        .collect();
    assert!(shares[2] > shares[0] && shares[2] > shares[1], "{shares:?}");

    // Click "Drain" on the busiest backend: the page and the API both say draining.
    let button = browser.wait_find(
        &format!("tr[data-backend=\"{busiest}\"] button.drain"),
        PAGE_TIMEOUT,
    );
    browser.click(&button);
    gw.wait_backend(&busiest, "draining", PAGE_TIMEOUT, |b| {
        b.state == "draining"
    });
    let (page, _) = wait_page_matches_api(&mut browser, &gw, "after drain");
    assert_eq!(row(&page, &busiest)["state"], json!("draining"), "{page}");
    assert_eq!(row(&page, &busiest)["button"], json!("Undrain"), "{page}");
    assert_eq!(row(&page, &busiest)["sessions"], json!(n.to_string()));

    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let path = test_output_dir("dashboard").join("dashboard-drained.png");
    std::fs::write(&path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    println!("screenshot: {} ({} bytes)", path.display(), png.len());

    // And back: "Undrain" makes it active in both places.
    let button = browser.wait_find(
        &format!("tr[data-backend=\"{busiest}\"] button.undrain"),
        PAGE_TIMEOUT,
    );
    browser.click(&button);
    gw.wait_backend(&busiest, "active", PAGE_TIMEOUT, |b| b.state == "active");
    let (page, _) = wait_page_matches_api(&mut browser, &gw, "after undrain");
    assert_eq!(row(&page, &busiest)["state"], json!("active"), "{page}");
    drop(browser);
    drop(backends);
}
