//! Kubernetes `AdmissionReview` v1: which images an object runs, and the
//! answers (allow, deny with a message, warnings, a JSONPatch).

use serde_json::{Value, json};

/// One container image of an object, and where it sits (a JSON Pointer to
/// the `image` field, for patches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageAt {
    /// The image reference as written.
    pub image: String,
    /// JSON Pointer of the `image` field.
    pub pointer: String,
}

/// Why a review cannot be answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    /// Not an `admission.k8s.io/v1` `AdmissionReview` with a request.
    #[error("not an admission.k8s.io/v1 AdmissionReview request: {0}")]
    Malformed(String),
}

/// The request part of a review.
#[derive(Debug, Clone)]
pub struct Review {
    /// `request.uid`, echoed in the response.
    pub uid: String,
    /// `request.kind.kind`.
    pub kind: String,
    /// `request.namespace`.
    pub namespace: String,
    /// `request.name`.
    pub name: String,
    /// `request.operation`.
    pub operation: String,
    /// `request.dryRun`.
    pub dry_run: bool,
    /// `request.object`.
    pub object: Value,
}

impl Review {
    /// Reads a review.
    pub fn parse(body: &[u8]) -> Result<Self, ReviewError> {
        let bad = |m: &str| ReviewError::Malformed(m.to_owned());
        let v: Value = serde_json::from_slice(body).map_err(|e| bad(&e.to_string()))?;
        if v["apiVersion"] != "admission.k8s.io/v1" || v["kind"] != "AdmissionReview" {
            return Err(bad("apiVersion/kind"));
        }
        let r = &v["request"];
        let uid = r["uid"]
            .as_str()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| bad("no request.uid"))?;
        let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
        Ok(Self {
            uid: uid.to_owned(),
            kind: r["kind"]["kind"].as_str().unwrap_or_default().to_owned(),
            namespace: text("namespace"),
            name: text("name"),
            operation: text("operation"),
            dry_run: r["dryRun"].as_bool().unwrap_or(false),
            object: r["object"].clone(),
        })
    }
}

/// Where the pod spec of an object of `kind` is (`None`: a kind that runs
/// no containers, or one this service does not know).
pub fn pod_spec_pointer(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Pod" => "/spec",
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => "/spec/template/spec",
        "PodTemplate" => "/template/spec",
        "CronJob" => "/spec/jobTemplate/spec/template/spec",
        _ => return None,
    })
}

/// Every image of `containers`, `initContainers` and `ephemeralContainers`
/// of the object's pod spec, with its location.
pub fn images(kind: &str, object: &Value) -> Option<Vec<ImageAt>> {
    let base = pod_spec_pointer(kind)?;
    let spec = object.pointer(base)?;
    let mut out = vec![];
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(items) = spec[list].as_array() else {
            continue;
        };
        for (i, c) in items.iter().enumerate() {
            if let Some(image) = c["image"].as_str() {
                out.push(ImageAt {
                    image: image.to_owned(),
                    pointer: format!("{base}/{list}/{i}/image"),
                });
            }
        }
    }
    Some(out)
}

/// An `AdmissionReview` response.
pub fn response(
    uid: &str,
    allowed: bool,
    message: Option<&str>,
    warnings: &[String],
    patch: Option<&Value>,
) -> Value {
    let mut r = json!({"uid": uid, "allowed": allowed});
    if let Some(m) = message {
        r["status"] = json!({"code": if allowed { 200 } else { 403 }, "message": m});
    }
    if !warnings.is_empty() {
        // The API server limits what it shows; keep each short.
        r["warnings"] = json!(
            warnings
                .iter()
                .map(|w| w.chars().take(512).collect::<String>())
                .collect::<Vec<_>>()
        );
    }
    if let Some(p) = patch {
        use base64::Engine as _;
        r["patchType"] = json!("JSONPatch");
        r["patch"] = json!(
            base64::engine::general_purpose::STANDARD
                .encode(serde_json::to_vec(p).unwrap_or_default())
        );
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": r})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_of_every_workload_kind() {
        let pod = json!({"spec": {
            "containers": [{"name": "a", "image": "h.io/a.test/x:1"}],
            "initContainers": [{"name": "i", "image": "h.io/a.test/init:1"}],
            "ephemeralContainers": [{"name": "e", "image": "h.io/a.test/debug:1"}],
        }});
        let got = images("Pod", &pod).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].pointer, "/spec/initContainers/0/image");
        let deploy =
            json!({"spec": {"template": {"spec": {"containers": [{"image": "x.io/a.test/y"}]}}}});
        for k in [
            "Deployment",
            "ReplicaSet",
            "StatefulSet",
            "DaemonSet",
            "Job",
        ] {
            assert_eq!(
                images(k, &deploy).unwrap()[0].pointer,
                "/spec/template/spec/containers/0/image"
            );
        }
        let cron = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"image": "x.io/a.test/y"}]}}}}}});
        assert_eq!(images("CronJob", &cron).unwrap().len(), 1);
        assert!(images("ConfigMap", &pod).is_none());
        // A Pod without a spec has no images (not an error).
        assert_eq!(images("Deployment", &json!({})), None);
    }

    #[test]
    fn malformed_reviews_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"{}",
            b"[]",
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
            &[0xff, 0xfe],
        ] {
            assert!(Review::parse(bad).is_err());
        }
        let ok = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"kind":"Pod"},"dryRun":true,"object":{}}}"#;
        let r = Review::parse(ok).unwrap();
        assert_eq!(
            (r.uid.as_str(), r.kind.as_str(), r.dry_run),
            ("u1", "Pod", true)
        );
    }
}
