//! The GitHub Action (`action.yml`) and the GitLab CI template
//! (`ci/gitlab/atcr-verify.yml`): their scripts, exactly as written, run
//! with their inputs as environment variables against a local ATCR.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output};

const PW: &str = "correct horse battery";

fn yaml(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    serde_norway::from_str(&text).unwrap()
}

/// The action step named `name`'s `run` script.
fn action_step(name: &str) -> String {
    let a = yaml("action.yml");
    a["runs"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()["run"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Runs `script` with bash in `dir`, atcr-verify on PATH, and `env`.
fn run(script: &str, dir: &Path, env: &[(&str, String)]) -> Output {
    let bin = workspace_bin("atcr-verify");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("bash");
    c.arg("-c").arg(script).current_dir(dir).env("PATH", path);
    c.env_remove("ATCR_VERIFY_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_action_and_the_gitlab_template_verify_as_written() {
    let s = start(&[]).await;
    let (_, tok, _) = owner_with_image(&s, "alice.test", PW, "pull,push,delete", "ci").await;
    let d = push_image(&s, &tok, "alice.test/app", "unsigned", "unsigned").await;
    detach_registry_artifact(&s, &tok, "alice.test/app", &d).await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let config = write_verifier_config(w, &s);
    let good = format!("{}/alice.test/app:v1", s.host);
    let bad = format!("{}/alice.test/app:unsigned", s.host);
    // The install step: atcr-verify is already on PATH.
    assert!(
        run(
            &action_step("install atcr-verify"),
            w,
            &[
                ("ATCR_ARCHIVE_URL", String::new()),
                ("ATCR_SOURCE", String::new())
            ]
        )
        .status
        .success()
    );
    let step = action_step("verify");
    let inputs = |image: &str, bundle: &str| {
        vec![
            ("INPUT_IMAGE", image.to_owned()),
            ("INPUT_POLICY", String::new()),
            ("INPUT_PLC_URL", String::new()),
            ("INPUT_CONFIG", config.display().to_string()),
            ("INPUT_OFFLINE_BUNDLE", bundle.to_owned()),
            ("INPUT_REPORT", "report.json".to_owned()),
            (
                "GITHUB_STEP_SUMMARY",
                w.join("summary.md").display().to_string(),
            ),
        ]
    };
    // Verified: success, a report and a summary.
    let out = run(&step, w, &inputs(&good, ""));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["decision"], "pass");
    let summary = std::fs::read_to_string(w.join("summary.md")).unwrap();
    assert!(summary.contains(&format!("VERIFIED `{good}`")), "{summary}");
    // Unsigned: the job fails, with the reason in the log and the summary.
    let out = run(&step, w, &inputs(&bad, ""));
    assert_eq!(out.status.code(), Some(1));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        log.contains("::error title=atcr-verify::") && log.contains("no_signatures"),
        "{log}"
    );
    assert!(
        std::fs::read_to_string(w.join("summary.md"))
            .unwrap()
            .contains("FAILED")
    );

    // GitLab: the template's script, as written.
    let t = yaml("ci/gitlab/atcr-verify.yml");
    let script = t[".atcr-verify"]["script"][0].as_str().unwrap().to_owned();
    let vars = |image: &str, bundle: &str| {
        vec![
            ("ATCR_IMAGE", image.to_owned()),
            ("ATCR_POLICY", String::new()),
            ("ATCR_PLC_URL", String::new()),
            ("ATCR_CONFIG", config.display().to_string()),
            ("ATCR_OFFLINE_BUNDLE", bundle.to_owned()),
            ("ATCR_REPORT", "atcr-verify-report.json".to_owned()),
        ]
    };
    let gl = w.join("gitlab");
    std::fs::create_dir_all(&gl).unwrap();
    let out = run(&script, &gl, &vars(&good, ""));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(gl.join("atcr-verify-report.json").exists());
    assert!(String::from_utf8_lossy(&out.stdout).contains("VERIFIED"));
    let out = run(&script, &gl, &vars(&bad, ""));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_signatures"));

    // Offline: a bundle exported while online verifies with every server
    // stopped, through both.
    let bundle = w.join("bundle.json");
    let bin = workspace_bin("atcr-verify");
    let out = Command::new(&bin)
        .args(["export", &good, "-o"])
        .arg(&bundle)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(s);
    let b = bundle.display().to_string();
    let out = run(&step, w, &inputs(&good, &b));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&script, &gl, &vars(&good, &b));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...and without the bundle the same run cannot complete (exit 3).
    let out = run(&step, w, &inputs(&good, ""));
    assert_eq!(out.status.code(), Some(3));
}
