//! Bodies of the `com.atproto.*` methods (lexicon field names, camelCase).
//! Records travel as atproto JSON (`serde_json::Value`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `com.atproto.server.createSession` input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionInput {
    /// Handle, DID or email.
    pub identifier: String,
    /// Account password or app password.
    pub password: String,
}

/// Session output of createSession / refreshSession.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionOutput {
    /// Short-lived access token.
    pub access_jwt: String,
    /// Long-lived refresh token.
    pub refresh_jwt: String,
    /// The account's handle.
    pub handle: String,
    /// The account's DID.
    pub did: String,
    /// The DID document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub did_doc: Option<Value>,
    /// Whether the account is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// `com.atproto.server.getSession` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetSessionOutput {
    /// Handle.
    pub handle: String,
    /// DID.
    pub did: String,
    /// DID document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub did_doc: Option<Value>,
    /// Active flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// `com.atproto.server.createAppPassword` input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAppPasswordInput {
    /// A name for the password.
    pub name: String,
    /// Whether it may do privileged operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
}

/// `com.atproto.server.createAppPassword` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppPassword {
    /// The name.
    pub name: String,
    /// The password (shown once).
    pub password: String,
    /// Creation time.
    pub created_at: String,
    /// Privileged flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
}

/// `com.atproto.server.describeServer` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeServerOutput {
    /// The server's DID.
    pub did: String,
    /// Domains handles may be created under.
    pub available_user_domains: Vec<String>,
    /// Whether an invite code is needed.
    #[serde(default)]
    pub invite_code_required: bool,
    /// Whether a phone number is needed (sent only when true, as the
    /// reference PDS does).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub phone_verification_required: bool,
    /// Largest blob `uploadBlob` accepts, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_upload_limit: Option<u64>,
    /// `privacyPolicy` / `termsOfService` URLs (none here).
    #[serde(default)]
    pub links: serde_json::Value,
    /// The operator's `email` (none here).
    #[serde(default)]
    pub contact: serde_json::Value,
}

/// A commit reference in write responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitMeta {
    /// Commit CID.
    pub cid: String,
    /// Revision.
    pub rev: String,
}

/// `com.atproto.repo.createRecord` input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRecordInput {
    /// Repository (handle or DID).
    pub repo: String,
    /// Collection NSID.
    pub collection: String,
    /// Record key (a TID is generated when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rkey: Option<String>,
    /// Lexicon validation request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<bool>,
    /// The record.
    pub record: Value,
    /// Expected current commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_commit: Option<String>,
}

/// `com.atproto.repo.putRecord` input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutRecordInput {
    /// Repository (handle or DID).
    pub repo: String,
    /// Collection NSID.
    pub collection: String,
    /// Record key.
    pub rkey: String,
    /// Lexicon validation request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<bool>,
    /// The record.
    pub record: Value,
    /// Expected current record CID (null: must not exist).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub swap_record: Option<Option<String>>,
    /// Expected current commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_commit: Option<String>,
}

/// `com.atproto.repo.deleteRecord` input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteRecordInput {
    /// Repository (handle or DID).
    pub repo: String,
    /// Collection NSID.
    pub collection: String,
    /// Record key.
    pub rkey: String,
    /// Expected current record CID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_record: Option<String>,
    /// Expected current commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_commit: Option<String>,
}

/// createRecord / putRecord output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteOutput {
    /// AT-URI of the record.
    pub uri: String,
    /// Record CID.
    pub cid: String,
    /// The commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitMeta>,
    /// `valid` / `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_status: Option<String>,
}

/// deleteRecord output.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeleteOutput {
    /// The commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitMeta>,
}

/// One write of `com.atproto.repo.applyWrites`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "$type")]
pub enum ApplyWrite {
    /// Create.
    #[serde(rename = "com.atproto.repo.applyWrites#create")]
    Create {
        /// Collection.
        collection: String,
        /// Record key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rkey: Option<String>,
        /// Record.
        value: Value,
    },
    /// Update (create or replace).
    #[serde(rename = "com.atproto.repo.applyWrites#update")]
    Update {
        /// Collection.
        collection: String,
        /// Record key.
        rkey: String,
        /// Record.
        value: Value,
    },
    /// Delete.
    #[serde(rename = "com.atproto.repo.applyWrites#delete")]
    Delete {
        /// Collection.
        collection: String,
        /// Record key.
        rkey: String,
    },
}

/// `com.atproto.repo.applyWrites` input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyWritesInput {
    /// Repository.
    pub repo: String,
    /// Validation request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<bool>,
    /// The writes, applied as one commit.
    pub writes: Vec<ApplyWrite>,
    /// Expected current commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_commit: Option<String>,
}

/// One result of applyWrites.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "$type")]
pub enum ApplyWriteResult {
    /// Create result.
    #[serde(rename = "com.atproto.repo.applyWrites#createResult")]
    Create {
        /// URI.
        uri: String,
        /// CID.
        cid: String,
        /// Validation status.
        #[serde(
            rename = "validationStatus",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        validation_status: Option<String>,
    },
    /// Update result.
    #[serde(rename = "com.atproto.repo.applyWrites#updateResult")]
    Update {
        /// URI.
        uri: String,
        /// CID.
        cid: String,
        /// Validation status.
        #[serde(
            rename = "validationStatus",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        validation_status: Option<String>,
    },
    /// Delete result.
    #[serde(rename = "com.atproto.repo.applyWrites#deleteResult")]
    Delete {},
}

/// `com.atproto.repo.applyWrites` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyWritesOutput {
    /// The commit.
    pub commit: CommitMeta,
    /// Per-write results.
    pub results: Vec<ApplyWriteResult>,
}

/// A record as getRecord / listRecords return it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordOutput {
    /// AT-URI.
    pub uri: String,
    /// CID.
    pub cid: String,
    /// The record (atproto JSON).
    pub value: Value,
}

/// `com.atproto.repo.listRecords` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListRecordsOutput {
    /// Records.
    pub records: Vec<RecordOutput>,
    /// Cursor for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `com.atproto.repo.describeRepo` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeRepoOutput {
    /// Handle.
    pub handle: String,
    /// DID.
    pub did: String,
    /// DID document.
    pub did_doc: Value,
    /// Collections present.
    pub collections: Vec<String>,
    /// Whether the handle resolves back.
    pub handle_is_correct: bool,
}

/// `com.atproto.repo.uploadBlob` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadBlobOutput {
    /// The blob reference (`{$type: blob, ref: {$link}, mimeType, size}`).
    pub blob: Value,
}

/// `com.atproto.sync.getLatestCommit` output.
pub type LatestCommit = CommitMeta;

/// `com.atproto.sync.listBlobs` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListBlobsOutput {
    /// Blob CIDs.
    pub cids: Vec<String>,
    /// Cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// One repository of `com.atproto.sync.listRepos`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoInfo {
    /// DID.
    pub did: String,
    /// Head commit CID.
    pub head: String,
    /// Revision.
    pub rev: String,
    /// Active flag.
    pub active: bool,
    /// Why the repository is inactive (`takendown`, `deactivated`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// `com.atproto.sync.listRepos` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListReposOutput {
    /// Repositories.
    pub repos: Vec<RepoInfo>,
    /// Cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `com.atproto.identity.resolveHandle` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolveHandleOutput {
    /// The DID.
    pub did: String,
}

/// `com.atproto.server.createAccount` input (admin-created accounts use it too).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAccountInput {
    /// Handle.
    pub handle: String,
    /// Password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Email (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Invite code (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_code: Option<String>,
}

/// `{field: null}` vs absent: `Some(None)` is an explicit null.
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<Option<String>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().and_then(|x| x.as_ref()).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}
