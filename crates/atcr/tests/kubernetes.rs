//! `atcr-verify serve` as the admission webhook of a real kube-apiserver
//! (the integration kit's 1.36.2 with etcd): signed images are admitted and
//! pinned to their digest, every other kind of image is denied with its
//! reason, and a webhook that is down denies too.

mod common;
use common::*;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const PW: &str = "correct horse battery";

/// The integration kit's kube-apiserver, torn down on drop.
struct Kit {
    env: HashMap<String, String>,
    kit: PathBuf,
}

impl Kit {
    fn dir() -> PathBuf {
        kit_dir()
    }

    fn up_k8s(state: &std::path::Path) -> Self {
        let kit = Self::dir();
        kit_install();
        let out = Command::new("timeout")
            .arg("120")
            .arg(kit.join("kit.sh"))
            .arg("up-k8s")
            .env("STATE", state)
            .env("KIT_PORTS", "auto")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kit.sh up-k8s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.strip_prefix("export ")?.split_once('=')?;
                Some((k.to_owned(), v.trim_matches('\'').to_owned()))
            })
            .collect();
        Self { env, kit }
    }

    fn var(&self, k: &str) -> &str {
        &self.env[k]
    }

    /// Gatekeeper's manager on this API server (`kit.sh up-gatekeeper`).
    fn up_gatekeeper(&mut self) {
        let out = Command::new("timeout")
            .arg("180")
            .arg(self.kit.join("kit.sh"))
            .arg("up-gatekeeper")
            .env("STATE", self.var("STATE"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kit.sh up-gatekeeper: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = l.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                self.env
                    .insert(k.to_owned(), v.trim_matches('\'').to_owned());
            }
        }
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new("kubectl");
        c.args(args)
            .env("KUBECONFIG", self.var("KUBECONFIG"))
            .env("KUBECACHEDIR", self.var("KUBECACHEDIR"))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `args`, which must be refused; returns the error text.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.kubectl(args, None);
        assert!(!out.status.success(), "kubectl {args:?} was admitted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        let _ = Command::new(self.kit.join("kit.sh"))
            .args(["down", "--purge"])
            .env("STATE", self.var("STATE"))
            .stdin(Stdio::null())
            .output();
    }
}

/// `atcr-verify serve` (the binary beside `atcr`), killed on drop.
struct VerifyService(std::process::Child);

impl Drop for VerifyService {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_service(
    kit: &Kit,
    registry: &Server,
    config: &std::path::Path,
    policy: &std::path::Path,
    port: u16,
    extra: &[&str],
) -> VerifyService {
    let bin = workspace_bin("atcr-verify");
    // Wrapped at once: dropping it kills and waits.
    let service = VerifyService(
        Command::new(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--tls-cert",
                kit.var("KIT_SERVER_CRT"),
                "--tls-key",
                kit.var("KIT_SERVER_KEY"),
            ])
            .args(["--registry", &registry.host])
            .arg("--config")
            .arg(config)
            .arg("--policy")
            .arg(policy)
            .args(["--log-format", "json"])
            .args(extra)
            .env_remove("ATCR_VERIFY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return service;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("atcr-verify serve did not start");
}

fn webhooks(port: u16, ca: &str) -> String {
    let rules = r#"
  rules:
  - {apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE","UPDATE"], resources: ["pods"]}
  - {apiGroups: ["apps"], apiVersions: ["v1"], operations: ["CREATE","UPDATE"], resources: ["deployments","replicasets","statefulsets","daemonsets"]}
  - {apiGroups: ["batch"], apiVersions: ["v1"], operations: ["CREATE","UPDATE"], resources: ["jobs","cronjobs"]}"#;
    let common = |name: &str, path: &str| {
        format!(
            r#"
- name: {name}
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 10
  namespaceSelector: {{matchLabels: {{atcr-verify: enabled}}}}
  clientConfig:
    url: https://127.0.0.1:{port}/{path}
    caBundle: {ca}{rules}"#
        )
    };
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {{name: atcr-verify}}\nwebhooks:{}\n  reinvocationPolicy: IfNeeded\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: atcr-verify}}\nwebhooks:{}\n",
        common("mutate.atcr-verify.io", "mutate"),
        common("validate.atcr-verify.io", "validate"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_on_a_real_api_server() {
    // Records are changed behind the registry's back below: it must keep
    // serving what the owner no longer signs (as a stale or hostile registry
    // would), so the verifier's refusal is what is tested. It does not
    // follow the PDS.
    let s = start(&[("ATCR_REGISTRY_FOLLOW_PDS", "false".into())]).await;
    let (alice, tok, good) =
        owner_with_image(&s, "alice.test", PW, "pull,push,delete", "good").await;
    let name = |repo: &str| format!("alice.test/{repo}");
    let push = |repo: &'static str, seed: &'static str| {
        let (s, tok) = (&s, tok.clone());
        async move {
            let t = token(
                s,
                Some(("alice.test", PW)),
                &[&format!("repository:alice.test/{repo}:pull,push,delete")],
            )
            .await;
            let _ = tok;
            (
                t.clone(),
                push_image(s, &t, &format!("alice.test/{repo}"), "v1", seed).await,
            )
        }
    };
    // Unsigned: its signature artifact removed.
    let (t, d) = push("unsigned", "unsigned").await;
    detach_registry_artifact(&s, &t, &name("unsigned"), &d).await;
    // Revoked: the owner's record deleted from the PDS.
    let (_, d) = push("revoked", "revoked").await;
    let rkey = atcr_oci::records::manifest_rkey("revoked", &atcr_oci::Digest::parse(&d).unwrap());
    delete_record(&s, &alice, "io.atcr.manifest", &rkey).await;
    // Wrong tag: the owner's tag record names another digest than the
    // registry serves.
    let (_, other) = push("other", "other").await;
    push("wrongtag", "wrongtag").await;
    s.services
        .pds
        .as_ref()
        .unwrap()
        .write(
            &alice,
            vec![atcr_pds::Write::Put {
                collection: "io.atcr.tag".into(),
                rkey: atcr_oci::tag_rkey("wrongtag", "v1"),
                record: atcr_oci::records::to_json(&atcr_oci::records::TagRecord::new(
                    "wrongtag",
                    "v1",
                    &other,
                    "at://x/y/z",
                    "2026-11-30T00:00:00Z",
                )),
                swap: None,
            }],
            None,
        )
        .await
        .unwrap();
    // Tampered: its own signature replaced by one pointing at another
    // image's record.
    let (t, d) = push("tampered", "tampered").await;
    let good_record = manifest_record_uri(&alice, "app", &good);
    point_signature_elsewhere(&s, &t, &name("tampered"), &d, &alice, &good_record).await;
    // Untrusted: the policy trusts only another identity for `strict`.
    push("strict", "strict").await;
    let work = tempfile::tempdir().unwrap();
    let policy = work.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1.0\npolicies:\n  - name: strict\n    scope: \"{}/*/strict\"\n    trustedDIDs: [did:plc:aaaaaaaaaaaaaaaaaaaaaaaa]\n  - name: owner\n    scope: \"**\"\n",
            s.host
        ),
    )
    .unwrap();

    // The deployment's verifier configuration, as `atcr verifier-config`
    // prints it.
    let config = write_verifier_config(work.path(), &s);
    let kit = Kit::up_k8s(work.path());
    let port = atcr_testkit::free_port();
    let service = start_service(&kit, &s, &config, &policy, port, &[]).await;
    kit.ok(&["create", "namespace", "t"], None);
    kit.ok(&["label", "namespace", "t", "atcr-verify=enabled"], None);
    kit.ok(
        &["apply", "-f", "-"],
        Some(&webhooks(port, kit.var("KIT_CA_BUNDLE"))),
    );
    let img = |repo: &str| format!("{}/alice.test/{repo}:v1", s.host);

    // A signed image is admitted, and stored pinned to its verified digest.
    kit.ok(
        &[
            "-n",
            "t",
            "run",
            "good",
            "--image",
            &img("app"),
            "--restart=Never",
        ],
        None,
    );
    let stored = kit.ok(
        &[
            "-n",
            "t",
            "get",
            "pod",
            "good",
            "-o",
            "jsonpath={.spec.containers[0].image}",
        ],
        None,
    );
    assert_eq!(stored, format!("{}/alice.test/app@{good}", s.host));
    // Deployments and CronJobs are checked through their pod templates.
    kit.ok(
        &[
            "-n",
            "t",
            "create",
            "deployment",
            "d",
            "--image",
            &img("app"),
        ],
        None,
    );
    kit.ok(
        &[
            "-n",
            "t",
            "create",
            "cronjob",
            "c",
            "--image",
            &img("app"),
            "--schedule",
            "*/5 * * * *",
        ],
        None,
    );
    let e = kit.refused(&[
        "-n",
        "t",
        "create",
        "deployment",
        "bad",
        "--image",
        &img("unsigned"),
    ]);
    assert!(e.contains("no_signatures"), "{e}");
    // Each kind of bad image is denied with its reason.
    for (repo, reason) in [
        ("unsigned", "no_signatures"),
        ("revoked", "revoked"),
        ("wrongtag", "tag_mismatch"),
        ("tampered", "digest_mismatch"),
        ("strict", "untrusted_signer"),
    ] {
        let e = kit.refused(&[
            "-n",
            "t",
            "run",
            repo,
            "--image",
            &img(repo),
            "--restart=Never",
        ]);
        assert!(e.contains("denied the request"), "{repo}: {e}");
        assert!(e.contains(reason), "{repo}: expected {reason}: {e}");
        assert!(
            e.contains(&img(repo)),
            "{repo}: the message names the image: {e}"
        );
    }
    // An init container counts too.
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: init, namespace: t}}\nspec:\n  restartPolicy: Never\n  initContainers: [{{name: i, image: \"{}\"}}]\n  containers: [{{name: c, image: \"{}\"}}]\n",
        img("revoked"),
        img("app")
    );
    let out = kit.kubectl(&["apply", "-f", "-"], Some(&pod));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));
    // --dry-run=server goes through the webhook.
    let e = kit.refused(&[
        "-n",
        "t",
        "run",
        "dry",
        "--image",
        &img("unsigned"),
        "--dry-run=server",
    ]);
    assert!(e.contains("no_signatures"), "{e}");
    kit.ok(
        &[
            "-n",
            "t",
            "run",
            "dry",
            "--image",
            &img("app"),
            "--dry-run=server",
        ],
        None,
    );
    // Namespaces without the label are not checked.
    kit.ok(&["create", "namespace", "free"], None);
    kit.ok(
        &[
            "-n",
            "free",
            "run",
            "x",
            "--image",
            &img("unsigned"),
            "--restart=Never",
        ],
        None,
    );
    // Kyverno's apiCall.service: POST with the JSON object of its `data`
    // entries and its service-account token; always 200, the decision inside.
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(kit.var("KIT_CA_CRT")).unwrap()).unwrap();
    let client = atcr_http::client_builder(std::time::Duration::from_secs(10))
        .add_root_certificate(ca)
        .build()
        .unwrap();
    for (repo, verified, reason) in [("app", true, "verified"), ("revoked", false, "revoked")] {
        let r = client
            .post(format!("https://127.0.0.1:{port}/verify"))
            .header("content-type", "application/json")
            .header(
                "authorization",
                "Bearer eyJhbGciOiJSUzI1NiJ9.kyverno-sa-token.sig",
            )
            .body(serde_json::to_vec(&serde_json::json!({"image": img(repo)})).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            (v["verified"].as_bool(), v["reason"].as_str()),
            (Some(verified), Some(reason)),
            "{v:#}"
        );
    }
    // GET /verify answers 200 or 403 (OPA http.send, scripts).
    let r = client
        .get(format!("https://127.0.0.1:{port}/verify"))
        .query(&[("image", img("unsigned"))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let metrics = get_text(&client, &format!("https://127.0.0.1:{port}/metrics")).await;
    assert!(
        metrics.contains(
            "atcr_verify_decisions_total{endpoint=\"validate\",reason=\"revoked\",result=\"deny\"}"
        ),
        "{metrics}"
    );
    // The service down: failurePolicy Fail denies.
    drop(service);
    let e = kit.refused(&[
        "-n",
        "t",
        "run",
        "down",
        "--image",
        &img("app"),
        "--restart=Never",
    ]);
    assert!(e.contains("failed calling webhook"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatekeeper_external_data_and_the_shipped_manifests() {
    let s = start(&[]).await;
    let (alice, tok, _) = owner_with_image(&s, "alice.test", PW, "pull,push,delete", "good").await;
    let _ = alice;
    let d = push_image(&s, &tok, "alice.test/app", "unsigned", "unsigned").await;
    detach_registry_artifact(&s, &tok, "alice.test/app", &d).await;
    let (slow, _slow_task) = silent_host().await;
    let work = tempfile::tempdir().unwrap();
    let policy = work.path().join("policy.yaml");
    std::fs::write(&policy, "version: 1.0\npolicies:\n  - scope: \"**\"\n").unwrap();
    let config = write_verifier_config(work.path(), &s);
    let mut kit = Kit::up_k8s(work.path());
    kit.up_gatekeeper();
    let port = atcr_testkit::free_port();
    // Gatekeeper presents its client certificate (mTLS) over TLS 1.3.
    let service = start_service(
        &kit,
        &s,
        &config,
        &policy,
        port,
        &[
            "--client-ca",
            kit.var("KIT_CA_CRT"),
            "--tls13-only",
            "--registry",
            &slow,
            "--budget-ms",
            "1500",
        ],
    )
    .await;
    // The shipped Provider, ConstraintTemplate and Constraint, pointed at
    // this service.
    let rendered = kit.ok(
        &[
            "kustomize",
            repo_root().join("deploy/gatekeeper").to_str().unwrap(),
        ],
        None,
    );
    let rendered = rendered
        .replace(
            "https://atcr-verify.atcr-verify.svc:443/provide",
            &format!("https://127.0.0.1:{port}/provide"),
        )
        .replace("@CA_BUNDLE@", kit.var("KIT_CA_BUNDLE"));
    let docs: Vec<&str> = rendered.split("\n---\n").collect();
    let (constraint, rest): (Vec<&str>, Vec<&str>) = docs
        .iter()
        .partition(|d| d.contains("apiVersion: constraints.gatekeeper.sh/"));
    kit.ok(&["apply", "-f", "-"], Some(&rest.join("\n---\n")));
    // The constraint's kind exists once Gatekeeper has processed the template.
    let mut last = String::new();
    let mut applied = false;
    for _ in 0..120 {
        let crd = kit.kubectl(
            &["get", "crd", "atcrverifiedimages.constraints.gatekeeper.sh"],
            None,
        );
        if crd.status.success() {
            let out = kit.kubectl(&["apply", "-f", "-"], Some(constraint[0]));
            if out.status.success() {
                applied = true;
                break;
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    if !applied {
        let log = std::fs::read_to_string(format!("{}/logs/gatekeeper.log", kit.var("STATE")))
            .unwrap_or_default();
        let tail: String = log.lines().rev().take(40).collect::<Vec<_>>().join("\n");
        let st = kit.kubectl(&["get", "constrainttemplate", "-o", "yaml"], None);
        panic!(
            "the constraint could not be created: {last}\n{}\n{tail}",
            String::from_utf8_lossy(&st.stdout)
        );
    }
    kit.ok(&["create", "namespace", "gk"], None);
    kit.ok(&["label", "namespace", "gk", "atcr-verify=enabled"], None);
    let img = format!("{}/alice.test/app", s.host);
    // Unsigned: denied with the reason, once Gatekeeper enforces the constraint.
    let mut denied = String::new();
    for i in 0..120 {
        let out = kit.kubectl(
            &[
                "-n",
                "gk",
                "run",
                &format!("u{i}"),
                "--image",
                &format!("{img}:unsigned"),
                "--restart=Never",
            ],
            None,
        );
        if !out.status.success() {
            denied = String::from_utf8_lossy(&out.stderr).into_owned();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(denied.contains("no_signatures"), "{denied}");
    // Signed: admitted.
    kit.ok(
        &[
            "-n",
            "gk",
            "run",
            "good",
            "--image",
            &format!("{img}:v1"),
            "--restart=Never",
        ],
        None,
    );
    // A registry that never answers: a per-key error within the budget, well
    // inside Gatekeeper's 3 s.
    let t = std::time::Instant::now();
    let e = kit.refused(&[
        "-n",
        "gk",
        "run",
        "slow",
        "--image",
        &format!("{slow}/alice.test/app:v1"),
        "--restart=Never",
    ]);
    assert!(e.contains("timeout"), "{e}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        t.elapsed()
    );
    // The provider down: denied through system_error.
    drop(service);
    let e = kit.refused(&[
        "-n",
        "gk",
        "run",
        "down",
        "--image",
        &format!("{img}:v1"),
        "--restart=Never",
    ]);
    assert!(e.contains("provider error") || e.contains("system"), "{e}");

    // The deploy/ manifests and the Kyverno policy are accepted by the API
    // server with Gatekeeper's and Kyverno's CRDs installed.
    kit.ok(
        &[
            "apply",
            "--server-side",
            "-f",
            Kit::dir().join("kyverno").to_str().unwrap(),
        ],
        None,
    );
    // (A server-side dry run persists nothing: the namespace must exist for
    // the namespaced objects to be checked.)
    kit.ok(&["create", "namespace", "atcr-verify"], None);
    for dir in ["deploy/base", "deploy/kyverno"] {
        let rendered = kit.ok(
            &["kustomize", repo_root().join(dir).to_str().unwrap()],
            None,
        );
        kit.ok(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered));
    }
    let rendered = kit.ok(
        &[
            "kustomize",
            repo_root()
                .join("deploy/overlays/cert-manager")
                .to_str()
                .unwrap(),
        ],
        None,
    );
    assert!(rendered.contains("cert-manager.io/inject-ca-from: atcr-verify/atcr-verify"));
}
