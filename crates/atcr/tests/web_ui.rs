//! The web UI (issue 16): pages driven in Debian's headless Chromium
//! (`web/ui.mjs`, Playwright's protocol client) with axe-core checks and
//! keyboard navigation, over images pushed by skopeo; and the forms'
//! security (CSRF, cookies, sessions) and the JSON API over plain HTTP.

mod common;
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const PW: &str = "correct-horse-battery";

/// Installs (once, cached) Chromium, playwright-core and axe-core.
fn web_tools() -> PathBuf {
    let out = Command::new(repo_root().join("scripts/web-tools"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/web-tools failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Pushes an OCI layout made by `mkimage.py` with skopeo; its digest.
async fn push_layout(
    s: &Server,
    name: &str,
    tag: &str,
    index: bool,
    annotations: &Value,
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new("python3");
    c.arg(repo_root().join("crates/atcr/tests/support/mkimage.py"))
        .arg(dir.path())
        .args(["1", "2000"])
        .arg(format!("--annotations={annotations}"));
    if index {
        c.arg("--index");
    }
    let digest = ok(&mut c).trim().to_owned();
    skopeo_copy_ok(
        &[
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("alice.test:{PW}"),
        ],
        &format!("oci:{}:latest", dir.path().display()),
        &format!("docker://{}/{name}:{tag}", s.host),
    )
    .await;
    digest
}

/// The verification badge of `owner/repo` at `reference`, waiting for it.
async fn badge(s: &Server, repo: &str, reference: &str) -> Value {
    let r = http()
        .get(format!(
            "{}/api/v1/verification/{repo}?reference={reference}&wait=30",
            s.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()
}

/// A registry with: a multi-arch index, an image with hostile annotations
/// (and a second tag to delete), an image co-signed by bob, and a tampered
/// image whose signature artifact points at another image's record.
struct Fixture {
    s: Server,
    alice: String,
    app: String,
}

const HOSTILE: &str = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">";

async fn fixture() -> Fixture {
    tools_dir();
    let s = start(&[]).await;
    let alice = account(&s, "alice.test", PW).await;
    account(&s, "bob.test", PW).await;
    push_layout(
        &s,
        "alice.test/multi",
        "v1",
        true,
        &serde_json::json!({"org.opencontainers.image.description": "A multi-arch demo image"}),
    )
    .await;
    let app = push_layout(
        &s,
        "alice.test/app",
        "v1",
        false,
        &serde_json::json!({
            "org.opencontainers.image.description": HOSTILE,
            "org.example.note\"><script>window.__pwned=3</script>": HOSTILE,
        }),
    )
    .await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/app:pull,push"],
    )
    .await;
    let m = get_manifest(&s, &tok, "alice.test/app", &app).await;
    let r = http()
        .put(format!("{}/v2/alice.test/app/manifests/old", s.url))
        .bearer_auth(&tok)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(m)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let signed = push_layout(&s, "alice.test/signed", "v1", false, &serde_json::json!({})).await;
    let image = format!("{}/alice.test/signed@{signed}", s.host);
    let url = s.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_atcr"))
            .args(["sign", &image, "--handle", "bob.test", "--password", PW])
            .args(["--plain-http", "--pds", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tampered = push_layout(
        &s,
        "alice.test/tampered",
        "v1",
        false,
        &serde_json::json!({}),
    )
    .await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/tampered:pull,push,delete"],
    )
    .await;
    point_signature_elsewhere(
        &s,
        &tok,
        "alice.test/tampered",
        &tampered,
        &alice,
        &manifest_record_uri(&alice, "app", &app),
    )
    .await;
    Fixture { s, alice, app }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_verify_and_pass_accessibility_checks_in_chromium() {
    let tools = web_tools();
    let f = fixture().await;
    let s = &f.s;

    // The badges, as the JSON API reports them.
    let b = badge(s, "alice.test/multi", "v1").await;
    assert_eq!(b["verification"]["state"], "verified", "{b}");
    let b = badge(s, "alice.test/app", "v1").await;
    assert_eq!(b["verification"]["state"], "verified", "{b}");
    let b = badge(s, "alice.test/signed", "v1").await;
    assert_eq!(b["verification"]["state"], "verified", "{b}");
    let signers = b["verification"]["signers"].as_array().unwrap();
    assert!(
        signers
            .iter()
            .any(|x| x["kind"] == "cosign" && x["valid"] == true),
        "bob's co-signature is listed and valid: {b}"
    );
    assert!(
        signers.iter().all(|x| {
            x["recordUrl"].as_str().is_some_and(|u| {
                u.starts_with(&format!("{}/xrpc/com.atproto.repo.getRecord?", s.url))
            })
        }),
        "{b}"
    );
    let b = badge(s, "alice.test/tampered", "v1").await;
    assert_eq!(b["verification"]["state"], "failed", "{b}");
    let reason = b["verification"]["reason"].as_str().unwrap().to_owned();
    assert!(!reason.is_empty() && reason != "failed", "{b}");

    let multi_digest = {
        let r: Value = http()
            .get(format!("{}/api/v1/repositories/alice.test/multi", s.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["tags"][0]["kind"], "index", "{r}");
        assert_eq!(
            r["tags"][0]["platforms"],
            serde_json::json!(["linux/amd64", "linux/arm64"])
        );
        r["tags"][0]["digest"].as_str().unwrap().to_owned()
    };

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let pages = serde_json::json!([
        {"name": "home", "path": "/", "keyboard": 6},
        {"name": "search-description", "path": "/search?q=multi-arch"},
        {"name": "search-owner", "path": "/search?q=bob.test"},
        {"name": "search-tag", "path": "/search?q=old"},
        {"name": "owner-alice", "path": "/u/alice.test"},
        {"name": "owner-bob", "path": "/u/bob.test"},
        {"name": "repo-multi", "path": "/r/alice.test/multi", "settle": true, "keyboard": 12},
        {"name": "repo-signed", "path": "/r/alice.test/signed", "settle": true},
        {"name": "repo-tampered", "path": "/r/alice.test/tampered", "settle": true},
        {"name": "repo-hostile", "path": "/r/alice.test/app", "settle": true},
        {"name": "manifest-index", "path": format!("/r/alice.test/multi/-/manifest/{multi_digest}"), "settle": true},
        {"name": "manifest-hostile", "path": format!("/r/alice.test/app/-/manifest/{}", f.app), "settle": true},
        {"name": "signin", "path": "/signin"},
        {"name": "not-found", "path": "/r/alice.test/nothing-here"},
    ]);
    let scenario = serde_json::json!({
        "base": s.url,
        "shots": shots,
        "pages": pages,
        "signin": {"handle": "alice.test", "password": PW, "delete": "app:old"},
    });
    let file = s.tmp.path().join("scenario.json");
    std::fs::write(&file, scenario.to_string()).unwrap();
    let script = repo_root().join("crates/atcr/tests/web/ui.mjs");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["300", "node"])
            .arg(script)
            .arg(file)
            .env("WEB_TOOLS", tools)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "ui.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("screenshots: {}", shots.display());

    let page = |name: &str| -> &Value {
        report["pages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
    };
    for p in report["pages"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let want = if name == "not-found" { 404 } else { 200 };
        assert_eq!(p["status"], want, "{name}");
        // The not-found page's own 404 is the one error allowed.
        let errors: Vec<&Value> = p["console_errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| !(name == "not-found" && e.as_str().unwrap().contains("404")))
            .collect();
        assert!(errors.is_empty(), "{name}: console errors {errors:?}");
        for key in ["violations", "dark_violations"] {
            let bad: Vec<&Value> = p[key]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["impact"] == "serious" || v["impact"] == "critical")
                .collect();
            assert!(bad.is_empty(), "{name} ({key}): {bad:?}");
        }
        assert_ne!(
            p["dark_background"], p["light_background"],
            "{name}: the colour scheme follows the system setting"
        );
        assert!(
            p["bytes"].as_u64().unwrap() < 100_000,
            "{name}: {} bytes",
            p["bytes"]
        );
        // Nothing injected ran or was parsed as markup.
        assert_eq!(p["pwned"], Value::Null, "{name}");
        assert_eq!(p["injected"], 0, "{name}");
        assert!(
            std::fs::metadata(shots.join(format!("{name}.png")))
                .unwrap()
                .len()
                > 1000
        );
    }

    let text = |name: &str| page(name)["text"].as_str().unwrap().to_owned();
    assert!(
        text("home").contains("alice.test/multi"),
        "{}",
        text("home")
    );
    assert!(text("search-description").contains("alice.test/multi"));
    assert!(text("search-owner").contains("bob.test"));
    assert!(text("search-tag").contains("alice.test/app"));
    let alice_page = text("owner-alice");
    assert!(
        alice_page.contains(&f.alice) && alice_page.contains("did:key:"),
        "{alice_page}"
    );
    assert!(alice_page.contains("alice.test/signed") && alice_page.contains("PDS"));
    let bob = text("owner-bob");
    assert!(
        bob.contains("alice.test/signed@"),
        "bob's co-signature: {bob}"
    );

    let multi = page("repo-multi");
    assert!(text("repo-multi").contains("linux/arm64"));
    assert!(text("repo-multi").contains("A multi-arch demo image"));
    assert!(text("repo-multi").contains(&format!("docker pull {}/alice.test/multi:v1", s.host)));
    assert_eq!(multi["badges"], serde_json::json!(["verified"]));
    let signed = text("repo-signed");
    assert!(
        signed.contains("co-signer") && signed.contains("bob.test"),
        "{signed}"
    );
    assert!(
        signed.contains("at://") && signed.contains("record at the PDS"),
        "{signed}"
    );
    let tampered = page("repo-tampered");
    let label = tampered["badges"][0].as_str().unwrap();
    assert!(label.starts_with("failed: "), "{label}");
    assert!(
        label.contains(&reason.replace('_', " ")),
        "{label} / {reason}"
    );
    // Untrusted annotations are shown as text.
    assert!(text("repo-hostile").contains(HOSTILE));
    assert!(text("manifest-hostile").contains(HOSTILE));
    assert!(text("manifest-hostile").contains("org.example.note\"><script>"));
    // The image configuration: its command and (untrusted) labels.
    assert!(text("manifest-hostile").contains("/bin/app --serve"));
    assert!(text("manifest-hostile").contains("Labels of the image configuration"));
    for name in ["manifest-index", "manifest-hostile"] {
        assert_eq!(
            page(name)["badges"],
            serde_json::json!(["verified"]),
            "{name}"
        );
        assert!(
            text(name).contains("owner alice.test valid"),
            "{}",
            text(name)
        );
    }
    let index = text("manifest-index");
    assert!(
        index.contains("linux/amd64") && index.contains("atcr-verify "),
        "{index}"
    );

    // Keyboard: the skip link first, then the header's controls; the skip
    // link moves focus to the main content; the repository page reaches
    // its copy buttons and tag links.
    let tabs = page("home")["tabs"].as_array().unwrap();
    assert_eq!(tabs[0], "a:Skip to content", "{tabs:?}");
    assert_eq!(tabs[1], "a:ATCR", "{tabs:?}");
    assert!(tabs[2].as_str().unwrap().starts_with("input:"), "{tabs:?}");
    assert_eq!(page("home")["after_skip"], "main");
    let tabs: Vec<&str> = multi["tabs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tabs.iter()
            .any(|t| t.starts_with("button:Copy pull command")),
        "{tabs:?}"
    );
    assert!(tabs.contains(&"a:v1"), "{tabs:?}");

    // Signing in, deleting a tag, an app password, signing out.
    let flow = &report["flow"];
    assert!(
        flow["wrong_password"]
            .as_str()
            .unwrap()
            .contains("wrong handle or password"),
        "{flow}"
    );
    assert_eq!(flow["me_h1"], "Signed in as alice.test");
    let cookie = flow["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "atcr_session")
        .unwrap();
    assert_eq!(cookie["httpOnly"], true);
    assert_eq!(cookie["sameSite"], "Lax");
    assert!(
        flow["me_violations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["impact"] != "serious" && v["impact"] != "critical"),
        "{flow}"
    );
    assert!(
        flow["after_delete"]
            .as_str()
            .unwrap()
            .contains("The tag was deleted.")
    );
    // Tokens issued in the second of the flow's app password revocation
    // count as issued before it (whole seconds): ask for one after it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let tok = token(
        s,
        Some(("alice.test", PW)),
        &["repository:alice.test/app:pull"],
    )
    .await;
    assert_eq!(manifest_status(s, &tok, "alice.test/app", "old").await, 404);
    assert_eq!(manifest_status(s, &tok, "alice.test/app", "v1").await, 200);
    assert_eq!(flow["created"].as_str().unwrap().len(), 19, "{flow}");
    assert!(
        flow["after_revoke"]
            .as_str()
            .unwrap()
            .contains("The app password was revoked.")
    );
    assert!(
        !flow["after_revoke"]
            .as_str()
            .unwrap()
            .contains("web-ui-test (")
    );
    assert_eq!(flow["after_signout_url"], format!("{}/", s.url));
    assert!(
        flow["after_signout_header"]
            .as_str()
            .unwrap()
            .contains("Sign in")
    );
    assert_eq!(flow["me_after_signout_url"], format!("{}/signin", s.url));
    assert_eq!(flow["console_errors"], serde_json::json!([]));
}

/// A URL-encoded form body (reqwest's `form` feature is not built).
trait FormBody {
    fn form_body(self, pairs: &[(&str, &str)]) -> Self;
}

impl FormBody for reqwest::RequestBuilder {
    fn form_body(self, pairs: &[(&str, &str)]) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }
}

/// The sign-in form's CSRF token and cookie, as a browser gets them.
async fn signin_form(s: &Server, c: &reqwest::Client) -> (String, String) {
    let r = c.get(format!("{}/signin", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("atcr_signin="))
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let html = r.text().await.unwrap();
    (cookie, hidden(&html, "csrf"))
}

/// The value of the first hidden input named `name`.
fn hidden(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Signs in over HTTP; the session cookie (`atcr_session=…`).
async fn sign_in(s: &Server, user: &str, password: &str) -> String {
    let c = http();
    let (cookie, csrf) = signin_form(s, &c).await;
    let r = c
        .post(format!("{}/signin", s.url))
        .header("cookie", &cookie)
        .header("origin", &s.url)
        .form_body(&[("handle", user), ("password", password), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let set = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("atcr_session="))
        .unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && !set.contains("Secure"),
        "{set}"
    );
    set.split(';').next().unwrap().to_owned()
}

/// The session's CSRF token, from the personal page.
async fn me_csrf(s: &Server, session: &str) -> String {
    let r = http()
        .get(format!("{}/me", s.url))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    hidden(&r.text().await.unwrap(), "csrf")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_refuse_forged_requests_and_sessions_end() {
    let s = start(&[]).await;
    account(&s, "alice.test", PW).await;
    account(&s, "bob.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/app:pull,push"],
    )
    .await;
    push_image(&s, &tok, "alice.test/app", "v1", "a").await;
    let c = http();

    // Sign-in: another site's form, a missing or wrong token are refused.
    let (cookie, csrf) = signin_form(&s, &c).await;
    for (origin, cookie, token) in [
        ("http://evil.example", cookie.as_str(), csrf.as_str()),
        (s.url.as_str(), "", csrf.as_str()),
        (s.url.as_str(), cookie.as_str(), "forged"),
        (s.url.as_str(), cookie.as_str(), ""),
    ] {
        let r = c
            .post(format!("{}/signin", s.url))
            .header("cookie", cookie)
            .header("origin", origin)
            .form_body(&[("handle", "alice.test"), ("password", PW), ("csrf", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{origin} {cookie} {token}");
        assert!(
            !r.headers()
                .get_all("set-cookie")
                .iter()
                .any(|v| v.to_str().unwrap().starts_with("atcr_session="))
        );
    }
    // A wrong password gets the form again and no session.
    let r = c
        .post(format!("{}/signin", s.url))
        .header("cookie", &cookie)
        .form_body(&[
            ("handle", "alice.test"),
            ("password", "wrong"),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        !r.headers()
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().unwrap().starts_with("atcr_session="))
    );
    assert!(r.text().await.unwrap().contains("wrong handle or password"));

    let alice = sign_in(&s, "alice.test", PW).await;
    let token_a = me_csrf(&s, &alice).await;
    let delete = |session: String, origin: String, csrf: String, repo: &'static str| {
        let c = c.clone();
        let url = format!("{}/me/tags/delete", s.url);
        async move {
            c.post(url)
                .header("cookie", session)
                .header("origin", origin)
                .form_body(&[("csrf", csrf.as_str()), ("repo", repo), ("tag", "v1")])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Forged deletes: no token, another session's token, another origin,
    // no session at all.
    let bob = sign_in(&s, "bob.test", PW).await;
    let token_b = me_csrf(&s, &bob).await;
    assert_eq!(
        delete(alice.clone(), s.url.clone(), String::new(), "app").await,
        403
    );
    assert_eq!(
        delete(alice.clone(), s.url.clone(), token_b.clone(), "app").await,
        403
    );
    assert_eq!(
        delete(
            alice.clone(),
            "http://evil.example".into(),
            token_a.clone(),
            "app"
        )
        .await,
        403
    );
    assert_eq!(
        delete(String::new(), s.url.clone(), token_a.clone(), "app").await,
        303,
        "to sign in"
    );
    // Bob can only delete in his own namespace: alice's app is not his.
    assert_eq!(
        delete(bob.clone(), s.url.clone(), token_b.clone(), "app").await,
        404
    );
    assert_eq!(manifest_status(&s, &tok, "alice.test/app", "v1").await, 200);
    // Bad input is refused, not passed on.
    assert_eq!(
        delete(alice.clone(), s.url.clone(), token_a.clone(), "../../x").await,
        400
    );
    assert_eq!(
        delete(alice.clone(), s.url.clone(), token_a.clone(), "app").await,
        303
    );
    assert_eq!(manifest_status(&s, &tok, "alice.test/app", "v1").await, 404);

    // Personal data is only the visitor's: bob's page names no alice data.
    let page = c
        .get(format!("{}/me", s.url))
        .header("cookie", &bob)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("alice.test/app") && !page.contains(&token_a));

    // An app-password session may not mint or revoke app passwords.
    let pds = s.services.pds.as_ref().unwrap();
    let did = pds.lookup_did("alice.test").await.unwrap();
    let ap = pds.create_app_password(&did, "ci").await.unwrap();
    let limited = sign_in(&s, "alice.test", &ap.password).await;
    let t = me_csrf(&s, &limited).await;
    let r = c
        .post(format!("{}/me/app-passwords", s.url))
        .header("cookie", &limited)
        .form_body(&[("csrf", t.as_str()), ("name", "more")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(pds.list_app_passwords(&did).await.unwrap().len(), 1);
    // Revoking that app password ends its sessions (tokens and web alike).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(pds.revoke_app_password(&did, "ci").await.unwrap());
    let r = c
        .get(format!("{}/me", s.url))
        .header("cookie", &limited)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the app password's session ended");

    // Signing out ends the session on the server, not only in the browser.
    let r = c
        .post(format!("{}/signout", s.url))
        .header("cookie", &bob)
        .form_body(&[("csrf", token_b.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = c
        .get(format!("{}/me", s.url))
        .header("cookie", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/signin");

    // Every page carries a CSP that runs only the registry's own script.
    let r = c.get(format!("{}/", s.url)).send().await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    // A large form is refused before it is read.
    let r = c
        .post(format!("{}/signin", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_lists_repositories_tags_and_verification() {
    let s = start(&[]).await;
    account(&s, "alice.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/app:pull,push"],
    )
    .await;
    let d = push_image(&s, &tok, "alice.test/app", "v1", "a").await;
    let c = http();
    let get = |p: String| {
        let c = c.clone();
        let url = format!("{}{p}", s.url);
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, v) = get("/api/v1/recent".into()).await;
    assert_eq!(st, 200);
    assert_eq!(v["tags"][0]["digest"], d.as_str());
    let (_, v) = get("/api/v1/owners/alice.test".into()).await;
    assert_eq!(v["repositories"][0]["name"], "alice.test/app");
    let (_, v) = get("/api/v1/search?q=app".into()).await;
    assert_eq!(v["repositories"][0]["repo"], "app", "{v}");
    for reference in [d.as_str(), "v1"] {
        let (st, v) = get(format!(
            "/api/v1/verification/alice.test/app?reference={reference}&wait=30"
        ))
        .await;
        assert_eq!(st, 200);
        assert_eq!(v["verification"]["state"], "verified", "{v}");
        assert_eq!(v["label"], "verified");
    }
    let (_, v) = get("/api/v1/repositories/alice.test/app".into()).await;
    assert_eq!(v["tags"][0]["tag"], "v1");
    assert_eq!(
        v["tags"][0]["verification"]["state"], "verified",
        "cached: {v}"
    );
    // Errors are JSON with a code; nothing not held here is verified.
    for (path, status, code) in [
        (
            "/api/v1/verification/alice.test/app?reference=nope",
            404,
            "not_found",
        ),
        (
            "/api/v1/verification/alice.test/app?reference=sha256:zz",
            400,
            "bad_request",
        ),
        ("/api/v1/repositories/alice.test/nothing", 404, "not_found"),
        (
            "/api/v1/repositories/alice.test/..%2f..%2fetc",
            404,
            "not_found",
        ),
        ("/api/v1/owners/not_a_handle!", 404, "not_found"),
    ] {
        let (st, v) = get(path.into()).await;
        assert_eq!(
            (st, v["error"].as_str().unwrap()),
            (status, code),
            "{path}: {v}"
        );
    }
    // A long search text is cut, not refused.
    let (st, v) = get(format!("/api/v1/search?q={}", "a".repeat(5000))).await;
    assert_eq!(st, 200);
    assert_eq!(v["query"].as_str().unwrap().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_registry_shows_pages_only_to_signed_in_users() {
    let s = start(&[("ATCR_REGISTRY_ANONYMOUS_PULL", "false".into())]).await;
    account(&s, "alice.test", PW).await;
    let tok = token(
        &s,
        Some(("alice.test", PW)),
        &["repository:alice.test/app:pull,push"],
    )
    .await;
    push_image(&s, &tok, "alice.test/app", "v1", "a").await;
    let c = http();
    for p in ["/", "/search?q=app", "/u/alice.test", "/r/alice.test/app"] {
        let r = c.get(format!("{}{p}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{p}");
        assert_eq!(r.headers()["location"], "/signin");
    }
    let r = c
        .get(format!("{}/api/v1/recent", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let session = sign_in(&s, "alice.test", PW).await;
    let page = c
        .get(format!("{}/r/alice.test/app", s.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .replace("&#x2f;", "/");
    assert!(page.contains("<h1>alice.test/app</h1>"), "{page}");
    // Badges say why they are not checked, naming the setting.
    assert!(page.contains("not checked"), "{page}");
    let r: Value = c
        .get(format!(
            "{}/api/v1/verification/alice.test/app?reference=v1",
            s.url
        ))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        r["verification"]["reason"]
            .as_str()
            .unwrap()
            .contains("registry.anonymous_pull"),
        "{r}"
    );
}
