use crate::{Directory, DirectoryError};
use atcr_plc::Operation;
use atcr_syntax::Did;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The directory API, to be nested under a prefix (default `/plc`).
pub fn router(dir: Directory) -> axum::Router {
    axum::Router::new()
        .route("/{did}", get(document).post(submit))
        .route("/{did}/log", get(log))
        .route("/{did}/log/audit", get(audit))
        .route("/{did}/log/last", get(last))
        .route("/{did}/data", get(data))
        .with_state(dir)
}

fn message(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "message": msg.into() }))).into_response()
}

impl IntoResponse for DirectoryError {
    fn into_response(self) -> Response {
        match &self {
            DirectoryError::NotFound(_) => message(StatusCode::NOT_FOUND, self.to_string()),
            DirectoryError::Gone(_) => message(StatusCode::GONE, self.to_string()),
            DirectoryError::Invalid(_) | DirectoryError::BadRequest(_) => {
                message(StatusCode::BAD_REQUEST, self.to_string())
            }
            DirectoryError::Db(e) => {
                tracing::error!("plc directory storage: {e}");
                message(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

fn parse_did(s: &str) -> Result<Did, DirectoryError> {
    match Did::new(s) {
        Ok(d) if d.method() == "plc" => Ok(d),
        _ => Err(DirectoryError::BadRequest(format!("not a did:plc: {s}"))),
    }
}

async fn document(
    State(dir): State<Directory>,
    Path(did): Path<String>,
) -> Result<Response, DirectoryError> {
    let doc = dir.document(&parse_did(&did)?).await?;
    Ok((
        [("content-type", "application/did+ld+json")],
        doc.to_string(),
    )
        .into_response())
}

async fn submit(
    State(dir): State<Directory>,
    Path(did): Path<String>,
    body: axum::body::Bytes,
) -> Result<StatusCode, DirectoryError> {
    let did = parse_did(&did)?;
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| DirectoryError::BadRequest(format!("body is not JSON: {e}")))?;
    dir.submit(&did, Operation::from_json(&json)?).await?;
    Ok(StatusCode::OK)
}

macro_rules! json_route {
    ($name:ident, $method:ident) => {
        async fn $name(
            State(dir): State<Directory>,
            Path(did): Path<String>,
        ) -> Result<Json<impl serde::Serialize>, DirectoryError> {
            Ok(Json(dir.$method(&parse_did(&did)?).await?))
        }
    };
}

json_route!(log, log);
json_route!(audit, audit);
json_route!(last, last);
json_route!(data, data);
