//! The collection lease: among relays sharing a catalog, one collects at a
//! time. The collector holds the catalog's `gc` lease, and before each
//! deletion (the sweep, each pack) checks that it still holds it and
//! renews it: a relay frozen past its lease (SIGSTOP, a long pause) finds
//! another holder's larger token when it resumes, and deletes nothing more.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::catalog::{Catalog, Lease};
use crate::clock::now_ms;

/// The lease's name in the catalog.
pub const GC_LEASE: &str = "gc";

/// A collection's right to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    lease: Option<Lease>,
    /// How long each renewal lasts (ms).
    ttl_ms: i64,
}

impl Fence {
    /// No lease: a collection with the data directory's lock held (offline),
    /// or the unit tests'.
    pub fn unshared() -> Self {
        Fence {
            lease: None,
            ttl_ms: 0,
        }
    }

    /// Takes the lease for `relay` for `ttl`; `None` while another relay
    /// holds it.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn take(catalog: &mut Catalog, relay: u16, ttl: Duration) -> Result<Option<Fence>> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        Ok(catalog
            .take_lease(GC_LEASE, relay, now_ms(), ttl_ms)?
            .map(|lease| Fence {
                lease: Some(lease),
                ttl_ms,
            }))
    }

    /// Checks that the lease is still this collection's, and renews it
    /// (for as long again as it was taken for).
    ///
    /// # Errors
    /// Catalog errors, or the lease lost: another relay collects now.
    pub fn check(&self, catalog: &Catalog) -> Result<()> {
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        if !catalog.renew_lease(GC_LEASE, lease, now_ms(), self.ttl_ms)? {
            bail!(
                "this relay's collection lease (token {}) was taken by another relay while this one was stopped past it; it deletes nothing more",
                lease.token
            );
        }
        Ok(())
    }

    /// Gives the lease back.
    pub fn release(&self, catalog: &mut Catalog) {
        if let Some(lease) = &self.lease {
            if let Err(e) = catalog.release_lease(GC_LEASE, lease) {
                tracing::warn!("gc: cannot give the lease back ({e}); it expires on its own");
            }
        }
    }
}
