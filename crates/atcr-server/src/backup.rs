//! Backups of a data directory, taken while the server runs, and restores.
//!
//! A backup is a directory: each SQLite database copied with SQLite's online
//! backup (a consistent snapshot, writers keep going), the session secret,
//! and the local blob store's files. The databases are copied first: a blob
//! is in its final place before any index row names it, so every blob the
//! snapshot references is there when the blobs are copied after. Blobs are
//! content-addressed and immutable: a repeated backup into the same
//! directory copies only new ones. With S3 storage the bucket is backed up
//! by the storage provider's means; the backup says so.

use atcr_config::Config;
use std::path::{Path, PathBuf};

/// The databases of a data directory.
const DATABASES: [&str; 3] = ["registry.sqlite", "pds.sqlite", "plc.sqlite"];

/// What a backup or restore copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Databases copied.
    pub databases: usize,
    /// Blob files copied (not counting ones already there).
    pub blobs: u64,
    /// Bytes of those blob files.
    pub blob_bytes: u64,
    /// Whether blobs live in S3 (not copied).
    pub s3: bool,
}

/// A backup without the registry index would restore to a registry that
/// forgot every image: with the index in PostgreSQL, refuse and say how.
fn refuse_shared_index(config: &Config) -> Result<(), BackupError> {
    if config.index.backend == "postgres" {
        return Err(BackupError(
            "index.backend = \"postgres\": the registry index is in PostgreSQL, which `atcr backup` does not copy; back it up with pg_dump and the blob bucket with the storage provider's means (docs/scale-out.md)".into(),
        ));
    }
    Ok(())
}

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackupError(pub String);

fn err(what: &Path, e: impl std::fmt::Display) -> BackupError {
    BackupError(format!("{}: {e}", what.display()))
}

fn blob_dir(config: &Config) -> Option<PathBuf> {
    (config.storage.backend != "s3").then(|| {
        config
            .storage
            .path
            .clone()
            .unwrap_or_else(|| config.server.data_dir.join("blobs"))
    })
}

/// Copies the files under `from` missing in `to` (skipping upload
/// sessions in progress); returns (files, bytes).
fn copy_tree(from: &Path, to: &Path) -> Result<(u64, u64), BackupError> {
    let (mut n, mut bytes) = (0, 0);
    let mut stack = vec![from.to_owned()];
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(&dir, e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| err(&dir, e))?;
            let path = entry.path();
            let rel = path.strip_prefix(from).map_err(|e| err(&path, e))?;
            if rel.starts_with("_uploads") {
                continue;
            }
            let ty = entry.file_type().map_err(|e| err(&path, e))?;
            if ty.is_dir() {
                stack.push(path);
                continue;
            }
            let dest = to.join(rel);
            if dest.exists() {
                continue;
            }
            if let Some(p) = dest.parent() {
                std::fs::create_dir_all(p).map_err(|e| err(p, e))?;
            }
            // Written beside, then renamed: an interrupted copy leaves no
            // partial blob under its content address.
            let tmp = dest.with_extension("partial");
            let len = std::fs::copy(&path, &tmp).map_err(|e| err(&path, e))?;
            std::fs::rename(&tmp, &dest).map_err(|e| err(&dest, e))?;
            n += 1;
            bytes += len;
        }
    }
    Ok((n, bytes))
}

fn snapshot(src: &Path, dest: &Path) -> Result<(), BackupError> {
    use atcr_sqlite::rusqlite::{Connection, OpenFlags, backup::Backup};
    let from = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| err(src, e))?;
    let tmp = dest.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    {
        let mut to = Connection::open(&tmp).map_err(|e| err(&tmp, e))?;
        let b = Backup::new(&from, &mut to).map_err(|e| err(src, e))?;
        b.run_to_completion(256, std::time::Duration::from_millis(5), None)
            .map_err(|e| err(src, e))?;
    }
    std::fs::rename(&tmp, dest).map_err(|e| err(dest, e))
}

/// Backs the data directory of `config` up into `dest` (created; may hold
/// an earlier backup, whose blobs are kept). Safe while the server runs.
pub fn backup(config: &Config, dest: &Path) -> Result<Copied, BackupError> {
    refuse_shared_index(config)?;
    let data = &config.server.data_dir;
    std::fs::create_dir_all(dest).map_err(|e| err(dest, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(dest, e))?;
    }
    let mut c = Copied::default();
    for db in DATABASES {
        let src = data.join(db);
        if src.exists() {
            snapshot(&src, &dest.join(db))?;
            c.databases += 1;
        }
    }
    if c.databases == 0 {
        return Err(BackupError(format!(
            "{}: no ATCR databases here (server.data_dir)",
            data.display()
        )));
    }
    let secret = data.join("secret");
    std::fs::copy(&secret, dest.join("secret")).map_err(|e| err(&secret, e))?;
    match blob_dir(config) {
        Some(blobs) => {
            let (n, bytes) = copy_tree(&blobs, &dest.join("blobs"))?;
            c.blobs = n;
            c.blob_bytes = bytes;
        }
        None => c.s3 = true,
    }
    Ok(c)
}

/// Restores a backup into the (empty or absent) data directory of `config`.
/// Refuses a data directory that already holds databases.
pub fn restore(config: &Config, src: &Path) -> Result<Copied, BackupError> {
    refuse_shared_index(config)?;
    let data = &config.server.data_dir;
    if DATABASES.iter().any(|d| data.join(d).exists()) {
        return Err(BackupError(format!(
            "{} already holds a registry: restore into an empty server.data_dir",
            data.display()
        )));
    }
    if !src.join("registry.sqlite").exists() {
        return Err(BackupError(format!(
            "{}: not an ATCR backup (no registry.sqlite)",
            src.display()
        )));
    }
    crate::prepare_data_dir(data).map_err(|e| BackupError(e.to_string()))?;
    let mut c = Copied::default();
    for name in DATABASES.iter().copied().chain(["secret"]) {
        let from = src.join(name);
        if !from.exists() {
            continue;
        }
        let to = data.join(name);
        let tmp = to.with_extension("partial");
        std::fs::copy(&from, &tmp).map_err(|e| err(&from, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| err(&tmp, e))?;
        }
        std::fs::rename(&tmp, &to).map_err(|e| err(&to, e))?;
        if name != "secret" {
            c.databases += 1;
        }
    }
    match blob_dir(config) {
        Some(blobs) => {
            let (n, bytes) = copy_tree(&src.join("blobs"), &blobs)?;
            c.blobs = n;
            c.blob_bytes = bytes;
        }
        None => c.s3 = true,
    }
    Ok(c)
}
