//! The copies of the catalog a relay on an object store keeps beside its
//! packs (`catalog/<ms>-<relay>.sqlite`): all but the blobs' index, which
//! each pack's trailer holds for its own blobs. Kept after every
//! collection by the relay holding the lease, and by `ferry-relay catalog
//! dump`; read back by `ferry-relay catalog rebuild`.

use anyhow::{Context, Result};

use crate::catalog::{Catalog, CatalogAt, Copied};
pub use crate::store::CopyShelf;

/// Where the copies live, below the store's prefix.
pub const FOLDER: &str = "catalog/";

/// Copies kept at most: older ones are deleted as a new one is kept.
pub const KEPT: usize = 8;

/// A copy just kept.
#[derive(Debug)]
pub struct Kept {
    /// Its name below the store's prefix.
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Rows copied, per table.
    pub copied: Copied,
}

/// Keeps a copy of `catalog` on `shelf`, named for `relay` and now; then
/// deletes all but the newest [`KEPT`].
///
/// # Errors
/// The catalog's or the store's errors.
pub fn keep(catalog: &Catalog, shelf: &dyn CopyShelf, relay: u16) -> Result<Kept> {
    let scratch = tempfile::tempdir()?;
    let file = scratch.path().join("catalog.sqlite");
    let copied = {
        let copy = Catalog::open_at(&CatalogAt::File(file.clone()))?;
        catalog
            .copy_all_but_blobs_into(&copy)
            .context("cannot copy the catalog")?
    };
    let bytes = std::fs::read(&file)?;
    let name = format!("{FOLDER}{:013}-{relay:04}.sqlite", crate::clock::now_ms());
    let size = bytes.len() as u64;
    shelf
        .put(&name, bytes)
        .with_context(|| format!("cannot store {name}"))?;
    let copies = shelf.list(FOLDER)?;
    for old in copies.iter().rev().skip(KEPT) {
        shelf.delete(old)?;
    }
    Ok(Kept {
        name,
        bytes: size,
        copied,
    })
}

/// "N client(s), M snapshot(s)" of a copy.
pub fn describe(copied: &Copied) -> String {
    let count = |table: &str| {
        copied
            .iter()
            .find(|(t, _)| *t == table)
            .map_or(0, |(_, n)| *n)
    };
    format!(
        "{} client(s), {} snapshot(s)",
        count("clients"),
        count("snapshots")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::Mutex;

    /// Copies in memory.
    #[derive(Default)]
    struct Shelf(Mutex<std::collections::BTreeMap<String, Vec<u8>>>);

    impl CopyShelf for Shelf {
        fn put(&self, name: &str, bytes: Vec<u8>) -> io::Result<()> {
            self.0.lock().unwrap().insert(name.into(), bytes);
            Ok(())
        }

        fn list(&self, folder: &str) -> io::Result<Vec<String>> {
            let names = self.0.lock().unwrap();
            Ok(names
                .keys()
                .filter(|n| n.starts_with(folder))
                .cloned()
                .collect())
        }

        fn delete(&self, name: &str) -> io::Result<()> {
            self.0.lock().unwrap().remove(name);
            Ok(())
        }
    }

    #[test]
    fn a_copy_opens_as_a_catalog_with_the_clients_and_the_newest_few_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut catalog = Catalog::open_at(&CatalogAt::File(dir.path().join("c.sqlite"))).unwrap();
        let (pairing, _) = catalog
            .create_pairing("laptop", 0, i64::MAX, 1)
            .unwrap()
            .unwrap();
        catalog
            .complete_pairing(
                pairing,
                &ferry_protocol::keys::PublicKey([1; 32]),
                "host",
                false,
                1,
            )
            .unwrap();
        let shelf = Shelf::default();
        let mut names = Vec::new();
        for _ in 0..KEPT + 2 {
            names.push(keep(&catalog, &shelf, 3).unwrap().name);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let left = shelf.list(FOLDER).unwrap();
        assert_eq!(left, names[2..].to_vec());
        assert!(left.iter().all(|n| n.ends_with("-0003.sqlite")));
        // The newest opens as a catalog and copies on.
        let file = dir.path().join("copy.sqlite");
        std::fs::write(&file, &shelf.0.lock().unwrap()[names.last().unwrap()]).unwrap();
        let copy = Catalog::open_at(&CatalogAt::File(file)).unwrap();
        let clients = copy.list_clients().unwrap();
        assert_eq!(clients.len(), 1);
        assert_eq!(clients[0].name, "laptop");
        let again = Catalog::open_at(&CatalogAt::File(dir.path().join("again.sqlite"))).unwrap();
        copy.copy_into(&again).unwrap();
    }
}
