//! `atcr index rebuild` (server stopped): a new registry index from the
//! owners' PDS records and the blob store, swapped in atomically.
//!
//! The new index is built beside the current one (`registry.sqlite.rebuild`),
//! checkpointed into one file, then renamed over `registry.sqlite`; the
//! index it replaces is kept as `registry.sqlite.before-rebuild`. A crash at
//! any point leaves the current index in place.

use crate::{ServerError, Services};
use atcr_config::Config;
use atcr_registry::index::Index;
use atcr_registry::rebuild::RebuildReport;
use std::path::Path;

fn remove_db(path: &Path) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let p = path.with_file_name(format!(
            "{}{suffix}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
        ));
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn rename_db(from: &Path, to: &Path) -> std::io::Result<()> {
    let name = |p: &Path, suffix: &str| {
        p.with_file_name(format!(
            "{}{suffix}",
            p.file_name().and_then(|n| n.to_str()).unwrap_or_default()
        ))
    };
    // Companions first, so the main file never appears without them.
    for suffix in ["-wal", "-shm", ""] {
        let f = name(from, suffix);
        if f.exists() {
            std::fs::rename(&f, name(to, suffix))?;
        }
    }
    Ok(())
}

/// Rebuilds the registry index of `config`'s data directory. The caller
/// makes sure no server runs on it.
pub async fn rebuild_index(config: Config) -> Result<RebuildReport, ServerError> {
    if config.index.backend == "postgres" {
        return Err(ServerError::Service(
            "index.backend = \"postgres\": `atcr index rebuild` replaces the SQLite index file; with PostgreSQL, restore the database from its backup instead (docs/scale-out.md)".into(),
        ));
    }
    let dir = crate::prepare_data_dir(&config.server.data_dir)?;
    let io = |what: &str, e: std::io::Error| ServerError::Service(format!("{what}: {e}"));
    let current = dir.join("registry.sqlite");
    let fresh = dir.join("registry.sqlite.rebuild");
    let before = dir.join("registry.sqlite.before-rebuild");
    remove_db(&fresh).map_err(|e| io("removing an unfinished rebuild", e))?;
    let report = {
        let services = Services::open(config).await?;
        let target = Index::open(&fresh).map_err(|e| ServerError::Service(e.to_string()))?;
        services
            .registry
            .rebuild_into(&target)
            .await
            .map_err(|e| ServerError::Service(e.to_string()))?
    };
    // Every connection is closed now: fold the WAL into the file.
    {
        let c = atcr_sqlite::rusqlite::Connection::open(&fresh)
            .map_err(|e| ServerError::Service(e.to_string()))?;
        let busy: i64 = c
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(|e| ServerError::Service(e.to_string()))?;
        if busy != 0 {
            return Err(ServerError::Service(
                "the new index is still in use; nothing was replaced".into(),
            ));
        }
        std::fs::File::open(&fresh)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("syncing the new index", e))?;
    }
    remove_db(&before).map_err(|e| io("removing the previous backup", e))?;
    rename_db(&current, &before).map_err(|e| io("keeping the current index", e))?;
    // Checkpointed and closed: its WAL companions hold nothing.
    for leftover in ["registry.sqlite.rebuild-wal", "registry.sqlite.rebuild-shm"] {
        let _ = std::fs::remove_file(dir.join(leftover));
    }
    std::fs::rename(&fresh, &current).map_err(|e| io("installing the new index", e))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing the data directory", e))?;
    Ok(report)
}
