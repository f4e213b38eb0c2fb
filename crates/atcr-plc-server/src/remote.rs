use atcr_plc::{Operation, PlcDirectory, PlcFuture};
use atcr_syntax::Did;
use url::Url;

/// A PLC directory reached over HTTP.
#[derive(Clone)]
pub struct RemotePlc {
    base: Url,
    http: reqwest::Client,
}

impl RemotePlc {
    /// A client for the directory at `base` (e.g. `https://plc.directory`).
    pub fn new(base: Url, http: reqwest::Client) -> Self {
        Self { base, http }
    }

    fn url(&self, did: &Did) -> String {
        format!("{}/{did}", self.base.as_str().trim_end_matches('/'))
    }
}

impl PlcDirectory for RemotePlc {
    fn submit<'a>(&'a self, did: &'a Did, op: &'a Operation) -> PlcFuture<'a, ()> {
        Box::pin(async move {
            let resp = self
                .http
                .post(self.url(did))
                .json(&op.to_json())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if resp.status().is_success() {
                Ok(())
            } else {
                let status = resp.status();
                Err(format!(
                    "PLC directory answered {status}: {}",
                    resp.text().await.unwrap_or_default()
                ))
            }
        })
    }

    fn last_operation<'a>(&'a self, did: &'a Did) -> PlcFuture<'a, Option<Operation>> {
        Box::pin(async move {
            let resp = self
                .http
                .get(format!("{}/log/last", self.url(did)))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            match resp.status().as_u16() {
                200 => {
                    let j: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
                    Operation::from_json(&j)
                        .map(Some)
                        .map_err(|e| e.to_string())
                }
                404 => Ok(None),
                s => Err(format!("PLC directory answered {s}")),
            }
        })
    }

    fn document<'a>(&'a self, did: &'a Did) -> PlcFuture<'a, Option<serde_json::Value>> {
        Box::pin(async move {
            let resp = self
                .http
                .get(self.url(did))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            match resp.status().as_u16() {
                200 => resp.json().await.map(Some).map_err(|e| e.to_string()),
                404 | 410 => Ok(None),
                s => Err(format!("PLC directory answered {s}")),
            }
        })
    }
}
