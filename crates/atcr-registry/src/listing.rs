//! Listings: a repository's tags, the catalog, and the referrers of a manifest.

use super::*;

impl Registry {
    /// Tags, paginated.
    pub async fn tags(
        &self,
        repo: &Repository,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>> {
        let (did, repo) = (repo.did().as_str(), repo.path());
        if !self.inner.index.repository_exists(did, repo).await? {
            return Err(Error::NameUnknown(
                "repository name not known to registry".into(),
            ));
        }
        Ok(self.inner.index.tags(did, repo, last, n).await?)
    }

    /// Repository names, paginated.
    pub async fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        Ok(self.inner.index.catalog(last, n).await?)
    }

    /// Manifests whose subject is `digest`.
    pub async fn referrers(&self, repo: &Repository, digest: &Digest) -> Result<Vec<ManifestRow>> {
        Ok(self
            .inner
            .index
            .referrers(repo.did().as_str(), repo.path(), &digest.to_string())
            .await?)
    }
}
