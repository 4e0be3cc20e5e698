//! The snapshot's trees, fetched ahead before the walk (as subtrees, see
//! `crate::fetcher::prefetch_trees`), only where the walk will go.

use super::*;

/// Bytes of trees fetched ahead before the walk, at most (a hostile relay
/// could name millions); past this, directories fetch their tree when
/// entered.
pub(super) const PREFETCH_TREE_BYTES: usize = 64 << 20;

impl Restore<'_> {
    /// Fetches the snapshot's trees from `root` down, where the selected
    /// paths and those above them lead, so entering a directory costs no
    /// round trip.
    pub(super) async fn prefetch_trees(&mut self, root: TreeId) -> Result<()> {
        let selection = self.selection.clone();
        self.trees = crate::fetcher::prefetch_trees(
            &mut self.stream.fetcher,
            self.client,
            root,
            PREFETCH_TREE_BYTES,
            |path| !matches!(selection.place(path), Place::Skip),
        )
        .await?;
        Ok(())
    }
}
