//! Objects beside the packs that are not packs: the copies of the catalog
//! `ferry-relay catalog dump` keeps (`catalog/<ms>-<relay>.sqlite`), which
//! `ferry-relay catalog rebuild` reads back with the packs' trailers.

use std::io;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;

use super::{failed, S3Reader};

impl S3Reader {
    fn named(&self, name: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{name}", self.prefix))
    }

    /// Stores `bytes` as the object `name` (below the prefix).
    ///
    /// # Errors
    /// The object store's errors.
    pub fn put_named(&self, name: &str, bytes: Vec<u8>) -> io::Result<()> {
        let (store, path) = (Arc::clone(&self.store), self.named(name));
        self.request(async move {
            store
                .put(&path, bytes.into())
                .await
                .map(|_| ())
                .map_err(|e| failed("uploading", &path, e))
        })
    }

    /// The object `name` (below the prefix), whole.
    ///
    /// # Errors
    /// The object store's errors (`NotFound` among them).
    pub fn get_named(&self, name: &str) -> io::Result<Vec<u8>> {
        let (store, path) = (Arc::clone(&self.store), self.named(name));
        self.request(async move {
            let got = store
                .get(&path)
                .await
                .map_err(|e| failed("reading", &path, e))?;
            got.bytes()
                .await
                .map(|b| b.to_vec())
                .map_err(|e| failed("reading", &path, e))
        })
    }

    /// Deletes the object `name` (below the prefix); one already gone is
    /// deleted.
    ///
    /// # Errors
    /// The object store's errors.
    pub fn delete_named(&self, name: &str) -> io::Result<()> {
        let (store, path) = (Arc::clone(&self.store), self.named(name));
        self.request(async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(failed("deleting", &path, e)),
            }
        })
    }

    /// The names (below the prefix) of the objects under `folder`, sorted.
    ///
    /// # Errors
    /// The object store's errors.
    pub fn list_named(&self, folder: &str) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = self
            .list_under(folder)?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        names.sort_unstable();
        Ok(names)
    }

    /// The objects under `folder`: each one's name below the prefix, and
    /// its size.
    pub(super) fn list_under(&self, folder: &str) -> io::Result<Vec<(String, u64)>> {
        let (store, under) = (Arc::clone(&self.store), self.named(folder));
        let listed = self.request(async move {
            store
                .list(Some(&under))
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| failed("listing", &under, e))
        })?;
        Ok(listed
            .iter()
            .filter_map(|meta| {
                let name = meta.location.as_ref().strip_prefix(self.prefix.as_str())?;
                Some((name.to_owned(), meta.size))
            })
            .collect())
    }
}

impl crate::store::CopyShelf for S3Reader {
    fn put(&self, name: &str, bytes: Vec<u8>) -> io::Result<()> {
        self.put_named(name, bytes)
    }

    fn list(&self, folder: &str) -> io::Result<Vec<String>> {
        self.list_named(folder)
    }

    fn delete(&self, name: &str) -> io::Result<()> {
        self.delete_named(name)
    }
}
