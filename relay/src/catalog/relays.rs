//! The relays sharing one catalog, and leases on work one of them does at
//! a time (a collection).
//!
//! Each relay registers under a *holder* name (its host and data
//! directory) and gets the lowest free id; the id goes into the name of
//! every pack it writes and every upload id it hands out, so two relays
//! never write the same object or stage under the same upload.
//!
//! A lease is held until it expires; each new holder gets a larger token,
//! and the holder's writes check that the token is still the lease's
//! (fencing): a holder frozen past its lease and then resumed finds its
//! token stale, and its writes are refused.

use super::sql::args;
use super::{Catalog, Result};

/// What registering a relay found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// The relay's id.
    Id(u16),
    /// The id asked for is another relay's (named).
    TakenBy(String),
    /// Every id up to the largest is taken.
    Full,
}

/// A relay registered in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RelayRow {
    /// Its id.
    pub id: u16,
    /// Its host and data directory.
    pub holder: String,
    /// When it last said it was up (ms since the epoch; 0: stopped).
    pub seen_at: i64,
}

/// A lease as held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The relay holding it.
    pub relay: u16,
    /// Its fencing token: larger for every new holder.
    pub token: i64,
    /// When it ends unless renewed (ms since the epoch).
    pub expires_at: i64,
}

impl Catalog {
    /// Registers `holder` as relay `wanted` (its id kept from an earlier
    /// start), or under the lowest free id up to `max`. An id registered
    /// to another holder is taken over if that one has not said it was up
    /// since `stale_before` (a data directory moved to another path);
    /// otherwise it is refused (a copy of a running relay's directory).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn register_relay(
        &mut self,
        holder: &str,
        wanted: Option<u16>,
        max: u16,
        now_ms: i64,
        stale_before: i64,
    ) -> Result<Registered> {
        let tx = self.db.write()?;
        let mine: Option<u16> = tx.row(
            "SELECT id FROM relays WHERE holder = ?1",
            args![holder],
            |r| r.get(0),
        )?;
        if let Some(id) = mine {
            if wanted.is_none_or(|w| w == id) {
                return Ok(Registered::Id(id));
            }
        }
        let id = match wanted {
            Some(id) => {
                let other: Option<(String, i64)> = tx.row(
                    "SELECT holder, seen_at FROM relays WHERE id = ?1",
                    args![id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let running = other.filter(|(o, seen_at)| o != holder && *seen_at >= stale_before);
                if let Some((other, _)) = running {
                    return Ok(Registered::TakenBy(other));
                }
                tx.execute("DELETE FROM relays WHERE id = ?1", args![id])?;
                id
            }
            None => {
                let taken: Vec<u16> =
                    tx.rows("SELECT id FROM relays ORDER BY id", args![], |r| r.get(0))?;
                match (0..=max).find(|id| !taken.contains(id)) {
                    Some(id) => id,
                    None => return Ok(Registered::Full),
                }
            }
        };
        tx.execute("DELETE FROM relays WHERE holder = ?1", args![holder])?;
        tx.execute(
            "INSERT INTO relays (id, holder, registered_at) VALUES (?1, ?2, ?3)",
            args![id, holder, now_ms],
        )?;
        tx.commit()?;
        Ok(Registered::Id(id))
    }

    /// Records that relay `id` is up at `now_ms` (0: it stopped).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn relay_seen(&self, id: u16, now_ms: i64) -> Result<()> {
        self.db.execute(
            "UPDATE relays SET seen_at = ?2 WHERE id = ?1",
            args![id, now_ms],
        )?;
        Ok(())
    }

    /// Every registered relay, by id.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn relays(&self) -> Result<Vec<RelayRow>> {
        let rows = self.db.rows(
            "SELECT id, holder, seen_at FROM relays ORDER BY id",
            args![],
            |r| {
                Ok(RelayRow {
                    id: r.get(0)?,
                    holder: r.get(1)?,
                    seen_at: r.get(2)?,
                })
            },
        )?;
        Ok(rows)
    }

    /// Takes lease `name` for `relay` for `ttl_ms`, if it is free or
    /// expired, with a larger token than any before.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn take_lease(
        &mut self,
        name: &str,
        relay: u16,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>> {
        let tx = self.db.write()?;
        let held: Option<(u16, i64, i64)> = tx.row(
            "SELECT relay, token, expires_at FROM leases WHERE name = ?1",
            args![name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        // Held (by another relay, or by another collection of this one)
        // until it expires; renewing is `renew_lease`'s.
        let token = match held {
            Some((_, _, expires_at)) if expires_at > now_ms => return Ok(None),
            Some((_, token, _)) => token + 1,
            None => 1,
        };
        let lease = Lease {
            relay,
            token,
            expires_at: now_ms + ttl_ms,
        };
        tx.execute(
            "INSERT INTO leases (name, relay, token, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET relay = ?2, token = ?3, expires_at = ?4",
            args![name, relay, token, lease.expires_at],
        )?;
        tx.commit()?;
        Ok(Some(lease))
    }

    /// Renews `lease` for `ttl_ms` from `now_ms` if it still holds lease
    /// `name` (one statement: it runs inside a caller's transaction too);
    /// false when it no longer does.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn renew_lease(&self, name: &str, lease: &Lease, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        let changed = self.db.execute(
            "UPDATE leases SET expires_at = ?5
             WHERE name = ?1 AND relay = ?2 AND token = ?3 AND expires_at > ?4",
            args![name, lease.relay, lease.token, now_ms, now_ms + ttl_ms],
        )?;
        Ok(changed == 1)
    }

    /// Lease `name` as it stands, if it is held at `now_ms`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn lease(&self, name: &str, now_ms: i64) -> Result<Option<Lease>> {
        self.db.row(
            "SELECT relay, token, expires_at FROM leases WHERE name = ?1 AND expires_at > ?2",
            args![name, now_ms],
            |r| {
                Ok(Lease {
                    relay: r.get(0)?,
                    token: r.get(1)?,
                    expires_at: r.get(2)?,
                })
            },
        )
    }

    /// Gives back every lease relay `relay` holds: called by a process
    /// that holds the relay's data directory, so they belong to one of it
    /// that is gone (killed mid-collection), and would otherwise lock the
    /// relay's own collections out for the rest of their length. The next
    /// holder still gets a larger token.
    ///
    /// # Errors
    /// The engine's errors.
    pub fn release_leases_of(&mut self, relay: u16) -> Result<()> {
        self.db.execute(
            "UPDATE leases SET expires_at = 0 WHERE relay = ?1",
            args![relay],
        )?;
        Ok(())
    }

    /// Gives lease `name` back, if `lease` still holds it.
    ///
    /// # Errors
    /// The engine's errors.
    pub fn release_lease(&mut self, name: &str, lease: &Lease) -> Result<()> {
        self.db.execute(
            "UPDATE leases SET expires_at = 0 WHERE name = ?1 AND relay = ?2 AND token = ?3",
            args![name, lease.relay, lease.token],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_get_the_lowest_free_id_and_keep_theirs() {
        for (at, _dir) in crate::catalog::test_catalogs() {
            let mut c = Catalog::open_at(&at).unwrap();
            let mut register =
                |holder: &str, wanted| c.register_relay(holder, wanted, 3, 100, 50).unwrap();
            assert_eq!(register("a:/d", None), Registered::Id(0));
            assert_eq!(register("b:/d", None), Registered::Id(1));
            assert_eq!(register("a:/d", Some(0)), Registered::Id(0));
            // An id kept from before the catalog knew relays is registered as it is.
            assert_eq!(register("c:/d", Some(3)), Registered::Id(3));
            assert_eq!(register("d:/d", None), Registered::Id(2));
            assert_eq!(register("e:/d", None), Registered::Full);
            // Relay 1 said it was up since 50: a copy of its directory is refused.
            c.relay_seen(1, 77).unwrap();
            assert_eq!(
                c.register_relay("copy:/d", Some(1), 3, 100, 50).unwrap(),
                Registered::TakenBy("b:/d".into())
            );
            // Relay 0 has not been seen since: moved elsewhere, it keeps its id.
            assert_eq!(
                c.register_relay("a:/moved", Some(0), 3, 100, 50).unwrap(),
                Registered::Id(0)
            );
            let rows: Vec<(u16, String, i64)> = c
                .relays()
                .unwrap()
                .into_iter()
                .map(|r| (r.id, r.holder, r.seen_at))
                .collect();
            assert_eq!(rows[0], (0, "a:/moved".to_string(), 0));
            assert_eq!(rows[1], (1, "b:/d".to_string(), 77));
        }
    }

    #[test]
    fn a_relay_restarted_takes_back_the_lease_its_killed_process_held() {
        for (at, _dir) in crate::catalog::test_catalogs() {
            let mut c = Catalog::open_at(&at).unwrap();
            let killed = c.take_lease("gc", 1, 1_000, 600_000).unwrap().unwrap();
            c.take_lease("other", 2, 1_000, 600_000).unwrap().unwrap();
            assert_eq!(c.take_lease("gc", 1, 2_000, 600_000).unwrap(), None);
            c.release_leases_of(1).unwrap();
            let again = c.take_lease("gc", 1, 2_000, 600_000).unwrap().unwrap();
            assert!(again.token > killed.token, "still fenced");
            assert!(
                c.lease("other", 2_000).unwrap().is_some(),
                "another relay's kept"
            );
        }
    }

    #[test]
    fn a_lease_has_one_holder_and_a_new_holder_fences_the_old_one() {
        for (at, _dir) in crate::catalog::test_catalogs() {
            let mut c = Catalog::open_at(&at).unwrap();
            let holder = |c: &Catalog, at| c.lease("gc", at).unwrap().map(|l| (l.relay, l.token));
            let first = c.take_lease("gc", 1, 1_000, 500).unwrap().unwrap();
            assert_eq!(c.take_lease("gc", 2, 1_200, 500).unwrap(), None, "held");
            assert_eq!(
                c.take_lease("gc", 1, 1_300, 500).unwrap(),
                None,
                "a second collection of the holder waits too"
            );
            assert!(c.renew_lease("gc", &first, 1_300, 500).unwrap());
            let renewed = c.lease("gc", 1_300).unwrap().unwrap();
            assert_eq!((renewed.token, renewed.expires_at), (first.token, 1_800));
            assert_eq!(holder(&c, 1_700), Some((1, first.token)));
            assert!(c.renew_lease("gc", &renewed, 1_700, 150).unwrap());
            assert_eq!(holder(&c, 1_850), None, "renewed to 1,850 only");
            // Relay 1 froze past its lease: relay 2 takes it, and 1's token is stale.
            assert!(
                !c.renew_lease("gc", &renewed, 1_860, 500).unwrap(),
                "expired"
            );
            let second = c.take_lease("gc", 2, 1_900, 500).unwrap().unwrap();
            assert!(second.token > first.token);
            assert!(
                !c.renew_lease("gc", &renewed, 1_901, 500).unwrap(),
                "fenced"
            );
            assert_eq!(holder(&c, 1_901), Some((2, second.token)));
            c.release_lease("gc", &renewed).unwrap();
            assert_eq!(
                c.lease("gc", 1_902).unwrap(),
                Some(second),
                "a stale holder cannot release it"
            );
            c.release_lease("gc", &second).unwrap();
            assert_eq!(c.lease("gc", 1_902).unwrap(), None);
            assert!(c.take_lease("gc", 3, 1_903, 500).unwrap().is_some());
        }
    }
}
