//! The dashboard in a real browser (Debian's chromium, headless, over the DevTools
//! protocol): the overview follows a pair live, a running message is cancelled from the
//! page, approvals are allowed and denied with a click, the message log filters and
//! searches, and no page shows a console error or requests anything off 127.0.0.1. Its
//! safety over plain HTTP: no state change without the CSRF token, none from another origin.
//! Also writes a screenshot of every view (`scripts/screenshots` keeps them in `docs/`).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::Browser;
use common::{call, typed};
use iris::api::{CallerStatus, MessageOutcome, MessageView};
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

async fn open(server: &common::Server) -> Browser {
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", server.base())).await;
    browser
        .wait_until(
            "the page live",
            "document.querySelector('#live').textContent === 'live'",
        )
        .await;
    // Gone if the page ever reloads: everything below must update in place.
    browser.eval("window.__sameDocument = true").await;
    browser
}

/// The dashboard, logged in as a person (the link `iris dashboard` prints).
async fn open_as_person(
    server: &common::Server,
    config: &std::path::Path,
    home: &std::path::Path,
) -> Browser {
    let output = common::iris_command(Some(config), home)
        .args(["dashboard"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let link = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(
        link.starts_with(&format!("{}/dashboard/login?key=", server.base())),
        "{link}"
    );
    let browser = Browser::start().await;
    browser.goto(&link).await;
    browser
        .wait_until(
            "the page live",
            "document.querySelector('#live')?.textContent === 'live'",
        )
        .await;
    browser.eval("window.__sameDocument = true").await;
    // The link works once.
    let again = reqwest::get(&link).await.unwrap();
    assert_eq!(again.status(), 401);
    browser
}

fn state_of(pair: &str) -> String {
    format!("document.querySelector('[data-pair=\"{pair}\"] .state')?.textContent")
}

async fn mcp(server: &common::Server) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    ().serve(StreamableHttpClientTransport::from_uri(server.url()))
        .await
        .unwrap()
}

/// A pair appears and turns busy live; the running message is cancelled from the page;
/// the pair is idle again — all without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_follows_a_pair_and_a_running_message_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-dashboard-{}", uuid::Uuid::new_v4());
    let config = common::fake_teams_config(dir.path(), &marker);
    let server = common::Server::start(Some(&config), &dir.path().join("home"));
    let browser = open(&server).await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#pairs tbody tr').length")
            .await,
        json!(0)
    );

    let client = mcp(&server).await;
    let peer = client.peer().clone();
    let running = tokio::spawn(async move {
        peer.call_tool(call(
            "send_message",
            json!({"fromTeam": "frontend", "toTeam": "backend", "message": "[[slow:600000]] a long one", "timeout": 600_000}),
        ))
        .await
    });
    browser
        .wait_until(
            "the pair busy",
            &format!("{} === 'busy'", state_of("frontend->backend")),
        )
        .await;

    browser.click("#tabs button[data-view=messages]").await;
    browser
        .wait_until(
            "the running message listed",
            "[...document.querySelectorAll('#messages tbody tr')].some(r => r.querySelector('.state').textContent === 'running')",
        )
        .await;
    browser.click("#messages tbody tr[data-message]").await;
    browser
        .wait_until(
            "its detail with a cancel button",
            "document.querySelector('#cancel-message')",
        )
        .await;
    browser.click("#cancel-message").await;
    let outcome: MessageOutcome = typed(&running.await.unwrap().unwrap());
    assert_eq!(outcome.status, CallerStatus::Cancelled, "{outcome:?}");

    browser.click("#tabs button[data-view=overview]").await;
    browser
        .wait_until(
            "the pair idle again",
            &format!("{} === 'idle'", state_of("frontend->backend")),
        )
        .await;
    assert_eq!(browser.eval("window.__sameDocument").await, json!(true));
    browser.assert_clean();
    client.cancel().await.unwrap();
}

/// A pending approval is allowed with a click (the agent's file is written), and another is
/// denied with a reason that reaches the transcript; a third decided elsewhere (the `iris`
/// command) leaves the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_decided_from_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-dashboard-{}", uuid::Uuid::new_v4());
    let yaml = common::fake_config_yaml(dir.path(), &marker, &["backend"], "", &|_| {
        "    permissions:\n      ask: [Bash]\n".to_owned()
    });
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let home = dir.path().join("home");
    let server = common::Server::start(Some(&config), &home);
    let client = mcp(&server).await;

    // Without a person's login the page shows the request but cannot decide it.
    let anonymous = open(&server).await;
    anonymous.click("#tabs button[data-view=approvals]").await;
    let peer = client.peer().clone();
    let first = tokio::spawn(async move {
        peer.call_tool(call(
            "send_message",
            json!({"fromTeam": "lead", "toTeam": "backend", "message": r#"[[tool:Bash:{"command":"touch allowed-from-the-page"}]]"#, "timeout": 600_000}),
        ))
        .await
    });
    anonymous
        .wait_until(
            "a pending approval",
            "document.querySelector('[data-approval]')",
        )
        .await;
    assert_eq!(
        anonymous
            .eval("[document.querySelector('[data-approval] button.allow').disabled, document.querySelector('#person-hint').classList.contains('hidden')]")
            .await,
        json!([true, false])
    );
    let id = anonymous
        .eval("document.querySelector('[data-approval]').dataset.approval")
        .await;
    let csrf = csrf_of(&server).await;
    let refused = reqwest::Client::new()
        .post(format!(
            "{}/dashboard/api/approvals/{}/approve",
            server.base(),
            id.as_str().unwrap()
        ))
        .header("x-iris-csrf", &csrf)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let said: Value = refused.json().await.unwrap();
    assert!(
        said["error"].as_str().unwrap().contains("iris dashboard"),
        "{said}"
    );
    anonymous.assert_clean();
    drop(anonymous);

    let browser = open_as_person(&server, &config, &home).await;
    browser.click("#tabs button[data-view=approvals]").await;
    let ask = |file: &str| {
        let peer = client.peer().clone();
        let message = format!(r#"[[tool:Bash:{{"command":"touch {file}"}}]]"#);
        tokio::spawn(async move {
            peer.call_tool(call(
                "send_message",
                json!({"fromTeam": "lead", "toTeam": "backend", "message": message, "timeout": 600_000}),
            ))
            .await
        })
    };

    let allowed = first;
    browser
        .wait_until(
            "a pending approval",
            "document.querySelector('[data-approval] button.allow:not([disabled])')",
        )
        .await;
    let shown = browser
        .eval("document.querySelector('[data-approval]').textContent")
        .await;
    assert!(
        shown
            .as_str()
            .unwrap()
            .contains("touch allowed-from-the-page"),
        "{shown}"
    );
    browser.click("[data-approval] button.allow").await;
    let outcome: MessageOutcome = typed(&allowed.await.unwrap().unwrap());
    assert_eq!(outcome.status, CallerStatus::Completed, "{outcome:?}");
    assert!(dir.path().join("backend/allowed-from-the-page").exists());
    browser
        .wait_until(
            "the decided approval gone",
            "!document.querySelector('[data-approval]')",
        )
        .await;

    let denied = ask("denied-from-the-page");
    browser
        .wait_until(
            "a second approval",
            "document.querySelector('[data-approval]')",
        )
        .await;
    browser
        .type_into("[data-approval] input.reason", "not on a Friday")
        .await;
    browser.click("[data-approval] button.deny").await;
    let outcome: MessageOutcome = typed(&denied.await.unwrap().unwrap());
    browser
        .wait_until(
            "the denied approval gone",
            "!document.querySelector('[data-approval]')",
        )
        .await;
    assert!(!dir.path().join("backend/denied-from-the-page").exists());
    let view: MessageView = typed(
        &client
            .call_tool(call(
                "message_status",
                json!({"fromTeam": "lead", "messageId": outcome.message_id.to_string()}),
            ))
            .await
            .unwrap(),
    );
    let reasons: Vec<String> = view
        .transcript
        .iter()
        .filter_map(|entry| match entry {
            iris::agent::TranscriptEntry::Permission {
                allowed: false,
                reason,
                ..
            } => reason.clone(),
            _ => None,
        })
        .collect();
    assert!(
        reasons
            .iter()
            .any(|reason| reason.contains("not on a Friday")),
        "{reasons:?}"
    );

    // Decided elsewhere: the page follows.
    let elsewhere = ask("allowed-elsewhere");
    browser
        .wait_until(
            "a third approval",
            "document.querySelector('[data-approval]')",
        )
        .await;
    let id = browser
        .eval("document.querySelector('[data-approval]').dataset.approval")
        .await;
    let output = common::iris_command(Some(&config), &home)
        .args(["approve", id.as_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    browser
        .wait_until(
            "the approval decided elsewhere gone",
            "!document.querySelector('[data-approval]') && !document.querySelector('#no-approvals').classList.contains('hidden')",
        )
        .await;
    let outcome: MessageOutcome = typed(&elsewhere.await.unwrap().unwrap());
    assert_eq!(outcome.status, CallerStatus::Completed);
    assert_eq!(browser.eval("window.__sameDocument").await, json!(true));
    browser.assert_clean();
    client.cancel().await.unwrap();
}

/// The message log filters by team and state and searches text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_log_filters_and_searches() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-dashboard-{}", uuid::Uuid::new_v4());
    let config = common::write_fake_config(dir.path(), &marker, &["a", "b", "c"], "");
    let server = common::Server::start(Some(&config), &dir.path().join("home"));
    let client = mcp(&server).await;
    for (from, to, text) in [
        ("a", "b", "alpha about the schema"),
        ("b", "c", "bravo about the build"),
        ("c", "a", "charlie about the schema [[error]]"),
    ] {
        client
            .call_tool(call(
                "send_message",
                json!({"fromTeam": from, "toTeam": to, "message": text}),
            ))
            .await
            .unwrap();
    }
    let browser = open(&server).await;
    browser.click("#tabs button[data-view=messages]").await;
    let rows = "document.querySelectorAll('#messages tbody tr').length";
    browser
        .wait_until("three messages", &format!("{rows} === 3"))
        .await;
    browser.type_into("#filter-q", "schema").await;
    browser
        .wait_until("two about the schema", &format!("{rows} === 2"))
        .await;
    browser.type_into("#filter-q", "").await;
    browser
        .wait_until("three again", &format!("{rows} === 3"))
        .await;
    browser.type_into("#filter-team", "c").await;
    browser
        .wait_until("two with team c", &format!("{rows} === 2"))
        .await;
    browser.type_into("#filter-state", "failed").await;
    browser
        .wait_until(
            "the failed one of team c",
            &format!("{rows} === 1 && document.querySelector('#messages tbody tr .text').textContent.startsWith('charlie')"),
        )
        .await;
    browser.assert_clean();
    client.cancel().await.unwrap();
}

/// No state change without this server's CSRF token, none from a page of another origin (it
/// can neither read the token nor act without it), and a page of another origin cannot read
/// the dashboard's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_origin_cannot_act() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-dashboard-{}", uuid::Uuid::new_v4());
    let config = common::fake_teams_config(dir.path(), &marker);
    let server = common::Server::start(Some(&config), &dir.path().join("home"));
    let base = server.base();
    let http = reqwest::Client::new();
    let wake = |csrf: Option<&str>, origin: Option<&str>| {
        let mut request = http
            .post(format!("{base}/dashboard/api/pairs/wake"))
            .json(&json!({"from": "frontend", "to": "backend"}));
        if let Some(csrf) = csrf {
            request = request.header("x-iris-csrf", csrf);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let refused = wake(None, None).await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("CSRF token"),
        "{body}"
    );
    let page = http.get(format!("{base}/")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"iris-csrf\" content=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let foreign = wake(Some(&csrf), Some("http://evil.example"))
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert_eq!(
        wake(Some("not-the-token"), None).await.unwrap().status(),
        403
    );
    let status: Value = http
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["pairs"], json!([]), "nothing was woken");

    // A page of another origin (another port) in the browser tries to act and to read.
    let evil = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_base = format!("http://{}", evil.local_addr().unwrap());
    let script = format!(
        r#"<!doctype html><title>elsewhere</title><script>
        window.results = [];
        (async () => {{
          const iris = {base:?};
          try {{ await fetch(iris + '/dashboard/api/wake-all', {{method: 'POST', mode: 'no-cors', body: '{{"from":"frontend"}}'}}); window.results.push('sent'); }} catch (e) {{ window.results.push('send failed'); }}
          try {{ await fetch(iris + '/dashboard/api/pairs/wake', {{method: 'POST', headers: {{'content-type': 'application/json', 'x-iris-csrf': 'guess'}}, body: '{{"from":"frontend","to":"backend"}}'}}); window.results.push('acted'); }} catch (e) {{ window.results.push('blocked'); }}
          try {{ const r = await fetch(iris + '/'); await r.text(); window.results.push('read'); }} catch (e) {{ window.results.push('unreadable'); }}
          window.done = true;
        }})();
        </script>"#
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let script = script.clone();
            async move { axum::response::Html(script) }
        }),
    );
    tokio::spawn(async move { axum::serve(evil, app).await });
    let browser = Browser::start().await;
    browser.goto(&format!("{evil_base}/")).await;
    browser
        .wait_until("the other page done", "window.done === true")
        .await;
    let results = browser.eval("window.results").await;
    assert_eq!(results, json!(["sent", "blocked", "unreadable"]));
    let status: Value = http
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["pairs"],
        json!([]),
        "nothing was woken from another origin"
    );
}

/// A screenshot of every view with something in it, into `$IRIS_SCREENSHOT_DIR` (default: a
/// temporary directory); each is a PNG of the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_of_every_view() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-dashboard-{}", uuid::Uuid::new_v4());
    let yaml = common::fake_config_yaml(
        dir.path(),
        &marker,
        &["backend", "frontend", "mobile"],
        "",
        &|team| {
            if team == "backend" {
                "    color: \"#3559c7\"\n    permissions:\n      ask: [Edit]\n".to_owned()
            } else {
                "    color: \"#c73559\"\n".to_owned()
            }
        },
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let home = dir.path().join("home");
    let server = common::Server::start(Some(&config), &home);
    let client = mcp(&server).await;
    for (from, to, text) in [
        (
            "frontend",
            "backend",
            "Which endpoint returns the user's plan? [[cost:0.0123]]",
        ),
        ("mobile", "backend", "Is /v2/plan stable? [[cost:0.0081]]"),
        (
            "backend",
            "frontend",
            "The plan field is renamed to tier [[cost:0.0042]]",
        ),
    ] {
        client
            .call_tool(call(
                "send_message",
                json!({"fromTeam": from, "toTeam": to, "message": text}),
            ))
            .await
            .unwrap();
    }
    let edit = json!({"file_path": "src/plan.rs", "old_string": "pub plan: String,", "new_string": "pub tier: Tier,"});
    let peer = client.peer().clone();
    let waiting = tokio::spawn(async move {
        peer.call_tool(call(
            "send_message",
            json!({"fromTeam": "frontend", "toTeam": "backend", "message": format!("rename it [[tool:Edit:{edit}]]"), "timeout": 600_000}),
        ))
        .await
    });
    let out = std::env::var_os("IRIS_SCREENSHOT_DIR").map(std::path::PathBuf::from);
    let keep = tempfile::tempdir().unwrap();
    let out = out.unwrap_or_else(|| keep.path().to_owned());
    std::fs::create_dir_all(&out).unwrap();
    let browser = open_as_person(&server, &config, &home).await;
    browser
        .wait_until(
            "the pair waiting for approval",
            &format!(
                "{} === 'waiting for approval'",
                state_of("frontend->backend")
            ),
        )
        .await;
    for (view, ready) in [
        (
            "overview",
            "document.querySelectorAll('#pairs tbody tr').length >= 3",
        ),
        (
            "messages",
            "document.querySelectorAll('#messages tbody tr').length >= 3",
        ),
        (
            "approvals",
            "document.querySelector('[data-approval] .diff')",
        ),
        ("charts", "document.querySelector('[data-chart]')"),
        (
            "logs",
            "document.querySelector('#logs').textContent.length > 0",
        ),
        ("config", "document.querySelector('#config table')"),
    ] {
        browser
            .click(&format!("#tabs button[data-view={view}]"))
            .await;
        browser.wait_until(view, ready).await;
        if view == "messages" {
            browser.click("#messages tbody tr[data-message]").await;
            browser
                .wait_until(
                    "a message's detail",
                    "!document.querySelector('#message-detail').classList.contains('hidden')",
                )
                .await;
        }
        let path = out.join(format!("dashboard-{view}.png"));
        browser.screenshot(&path).await;
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            path.display()
        );
        assert!(bytes.len() > 10_000, "{} is nearly empty", path.display());
    }
    browser.assert_clean();
    // Let the waiting message go (as a person, from the page).
    browser.click("#tabs button[data-view=approvals]").await;
    browser
        .type_into("[data-approval] input.reason", "screenshots only")
        .await;
    browser.click("[data-approval] button.deny").await;
    let _ = waiting.await;
    client.cancel().await.unwrap();
}

async fn csrf_of(server: &common::Server) -> String {
    let html = reqwest::get(format!("{}/", server.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    html.split("name=\"iris-csrf\" content=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

/// With tokens configured the dashboard needs a login: its page is a login form, its data
/// is refused; a wrong token is refused; a right one gives an `HttpOnly; SameSite=Strict`
/// session cookie, with which the browser gets the live dashboard. `dashboard.enabled:
/// false` turns it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_need_a_login_and_the_dashboard_can_be_off() {
    const TOKEN: &str = "dashboard-login-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-dashboard-{}", uuid::Uuid::new_v4());
    let config = common::write_fake_config(
        dir.path(),
        &marker,
        &["backend"],
        &format!("  httpToken: {TOKEN}\n"),
    );
    let server = common::Server::start(Some(&config), &dir.path().join("home"));
    let base = server.base();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("action=\"/dashboard/login\""), "{page}");
    assert!(
        !page.contains("iris-csrf"),
        "no CSRF token before the login"
    );
    let refused = http
        .get(format!("{base}/dashboard/api/overview"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let wrong = http
        .post(format!("{base}/dashboard/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=not-a-token-of-this-iris")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = http
        .post(format!("{base}/dashboard/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 303);
    let cookie = right.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let overview = http
        .get(format!("{base}/dashboard/api/overview"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    let bearer = http
        .get(format!("{base}/dashboard/api/overview"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);

    // In the browser: the form, then the dashboard.
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/")).await;
    browser.type_into("input[name=token]", TOKEN).await;
    // Submitted after this evaluation returns: the page navigates away under it.
    browser
        .eval("setTimeout(() => document.querySelector('form').submit(), 0); true")
        .await;
    browser
        .wait_until(
            "the dashboard live after the login",
            "document.querySelector('#live')?.textContent === 'live'",
        )
        .await;
    browser.assert_clean();

    // Turned off by an edit of the file (hot reload): every dashboard path is gone.
    let text = std::fs::read_to_string(&config).unwrap() + "dashboard:\n  enabled: false\n";
    common::replace_file(&config, &text);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = http.get(format!("{base}/")).send().await.unwrap().status();
        if status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dashboard still answers {status} after dashboard.enabled: false"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let gone = http
        .get(format!("{base}/dashboard/api/overview"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

/// The actions on a pair, from the page: sleep, wake, reboot and delete (each of those two
/// pressed twice), the fork command, wake all; the logs view filters by level; the config
/// view redacts `env` values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_actions_logs_and_config_from_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-dashboard-{}", uuid::Uuid::new_v4());
    let config = common::fake_teams_config(dir.path(), &marker);
    let server = common::Server::start(Some(&config), &dir.path().join("home"));
    let client = mcp(&server).await;
    client
        .call_tool(call(
            "send_message",
            json!({"fromTeam": "frontend", "toTeam": "backend", "message": "hello"}),
        ))
        .await
        .unwrap();
    let browser = open(&server).await;
    let row = "[data-pair=\"frontend->backend\"]";
    let state = state_of("frontend->backend");
    browser
        .wait_until("the pair idle", &format!("{state} === 'idle'"))
        .await;
    let session_of = format!("document.querySelector('{row} td[title]').title");
    let first_session = browser.eval(&session_of).await;

    browser.click(&format!("{row} button.sleep")).await;
    browser
        .wait_until("asleep", &format!("{state} === 'asleep'"))
        .await;
    browser.click(&format!("{row} button.wake")).await;
    browser
        .wait_until("awake", &format!("{state} === 'idle'"))
        .await;

    // Reboot: once arms the button, twice does it (a new session).
    browser.click(&format!("{row} button.reboot")).await;
    assert_eq!(
        browser
            .eval(&format!(
                "document.querySelector('{row} button.reboot').dataset.armed"
            ))
            .await,
        json!("yes")
    );
    browser.click(&format!("{row} button.reboot")).await;
    browser
        .wait_until(
            "a new session",
            &format!("document.querySelector('{row} td[title]').title !== {first_session}"),
        )
        .await;

    browser.click(&format!("{row} button.fork")).await;
    browser
        .wait_until(
            "the fork command",
            "document.querySelector('#fork-command').value.includes('--fork-session')",
        )
        .await;

    // Delete: the pair's session goes; its row shows it asleep with a new session.
    let before_delete = browser.eval(&session_of).await;
    browser.click(&format!("{row} button.delete")).await;
    browser.click(&format!("{row} button.delete")).await;
    browser
        .wait_until(
            "the session deleted",
            &format!("document.querySelector('{row} td[title]').title !== {before_delete}"),
        )
        .await;

    // Wake all for a caller: a pair to every other team.
    browser.type_into("#wake-all-from", "mobile").await;
    browser.click("#wake-all").await;
    browser
        .wait_until(
            "mobile's pairs awake",
            &format!(
                "{} === 'idle' && {} === 'idle'",
                state_of("mobile->backend"),
                state_of("mobile->frontend")
            ),
        )
        .await;

    browser.click("#tabs button[data-view=logs]").await;
    browser
        .wait_until(
            "info logs",
            "document.querySelector('#logs').textContent.includes(' INFO ')",
        )
        .await;
    browser.type_into("#log-level", "error").await;
    browser
        .wait_until(
            "no info line at level error",
            "!document.querySelector('#logs').textContent.includes(' INFO ')",
        )
        .await;

    browser.click("#tabs button[data-view=config]").await;
    browser
        .wait_until("the config", "document.querySelector('#config table')")
        .await;
    let shown = browser
        .eval("document.querySelector('#config').textContent")
        .await;
    let shown = shown.as_str().unwrap();
    assert!(shown.contains("SECRET_TOKEN"), "the env key is listed");
    assert!(!shown.contains("hunter2"), "an env value leaked: {shown}");
    assert!(shown.contains("(redacted)"));
    browser.assert_clean();
    client.cancel().await.unwrap();
}
