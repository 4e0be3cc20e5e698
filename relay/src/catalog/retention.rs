//! Retention as the relay decides it: its rules per client or set, the
//! endpoint's hints per set, protected snapshots; see
//! `ferry_protocol::keep` for the decision itself.

use super::sql::args;
use ferry_protocol::keep::{decide, Decision, Rules, Snapshot};
use ferry_protocol::retention::Retention;

use super::{Catalog, CatalogError, ClientId, Result, SetId, SnapshotId};

/// The scope of a rule: a client's default, or one of its sets.
fn scope(set: Option<&str>) -> &str {
    set.unwrap_or("")
}

fn json_error(e: serde_json::Error) -> CatalogError {
    CatalogError::Value(format!("stored retention does not parse: {e}"))
}

/// What retention decided for one set.
#[derive(Debug, Clone)]
pub struct SetDecision {
    /// The set's owner.
    pub client: ClientId,
    /// The set.
    pub set_id: SetId,
    /// The set's name.
    pub set: String,
    /// The rules that applied (`None`: none anywhere, everything kept).
    pub rules: Option<Rules>,
    /// For each snapshot, why it is kept (empty: forgotten).
    pub decision: Decision,
}

impl Catalog {
    /// Sets (or with `None`, removes) the relay's rules for `client`, or
    /// for its set `set`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_rules(
        &mut self,
        client: ClientId,
        set: Option<&str>,
        rules: Option<&Rules>,
    ) -> Result<()> {
        match rules {
            Some(rules) => {
                let text = serde_json::to_string(rules).map_err(json_error)?;
                self.db.execute(
                    "INSERT INTO retention_rules (client_id, set_name, rules) VALUES (?1, ?2, ?3)
                     ON CONFLICT (client_id, set_name) DO UPDATE SET rules = excluded.rules",
                    args![client, scope(set), text],
                )?;
            }
            None => {
                self.db.execute(
                    "DELETE FROM retention_rules WHERE client_id = ?1 AND set_name = ?2",
                    args![client, scope(set)],
                )?;
            }
        }
        Ok(())
    }

    /// The rules stored for `client`'s set `set`: the set's own, else the
    /// client's; `None` when neither is stored (the relay's defaults apply).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn stored_rules(&self, client: ClientId, set: &str) -> Result<Option<Rules>> {
        let text: Option<String> = self.db.row(
            "SELECT rules FROM retention_rules WHERE client_id = ?1 AND set_name IN (?2, '')
             ORDER BY set_name = '' LIMIT 1",
            args![client, set],
            |r| r.get(0),
        )?;
        text.map(|t| serde_json::from_str(&t).map_err(json_error))
            .transpose()
    }

    /// The lock that applies to `client`'s set `set_id` (its rules', the
    /// client's, `defaults`', else the default lock).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn lock_of(
        &self,
        client: ClientId,
        set_id: SetId,
        defaults: &Rules,
    ) -> Result<ferry_protocol::keep::Period> {
        let set: String = self
            .db
            .value("SELECT name FROM backup_sets WHERE id = ?1", args![set_id])?;
        let own = self.stored_rules(client, &set)?;
        Ok(Rules::effective(own.as_ref(), defaults)
            .lock
            .unwrap_or(ferry_protocol::keep::DEFAULT_LOCK))
    }

    /// Records the endpoint's hints for a set (sent with each backup).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn save_hints(&mut self, set_id: SetId, hints: &Retention) -> Result<()> {
        let text = serde_json::to_string(hints).map_err(json_error)?;
        self.db.execute(
            "UPDATE backup_sets SET hints = ?2 WHERE id = ?1",
            args![set_id, text],
        )?;
        Ok(())
    }

    /// What retention decides now for every set (of `client`, and only
    /// set `set`, if given), with `defaults` where the catalog stores no rule.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn retention_decisions(
        &self,
        client: Option<ClientId>,
        set: Option<SetId>,
        defaults: &Rules,
        now_ms: i64,
    ) -> Result<Vec<SetDecision>> {
        let sets: Vec<(ClientId, SetId, String, Option<String>)> = self.db.rows(
            "SELECT client_id, id, name, hints FROM backup_sets
             WHERE (CAST(?1 AS BIGINT) IS NULL OR client_id = ?1) AND (CAST(?2 AS BIGINT) IS NULL OR id = ?2)
             ORDER BY client_id, name",
            args![client, set],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let mut decisions = Vec::with_capacity(sets.len());
        for (client, set_id, set, hints) in sets {
            let hints: Retention = match hints {
                Some(text) => serde_json::from_str(&text).map_err(json_error)?,
                None => Retention::default(),
            };
            let own = self.stored_rules(client, &set)?;
            let rules = Some(Rules::effective(own.as_ref(), defaults)).filter(Rules::is_set);
            let snapshots = self.set_snapshots(set_id)?;
            let decision = decide(&snapshots, &rules.unwrap_or_default(), &hints, now_ms);
            decisions.push(SetDecision {
                client,
                set_id,
                set,
                rules,
                decision,
            });
        }
        Ok(decisions)
    }

    /// A set's snapshots as retention sees them, in commit order.
    fn set_snapshots(&self, set_id: SetId) -> Result<Vec<Snapshot>> {
        let rows: Vec<(Snapshot, Vec<u8>)> = self.db.rows(
            "SELECT id, finished_at, protected, held_until, root FROM snapshots
             WHERE set_id = ?1 ORDER BY id",
            args![set_id],
            |r| {
                Ok((
                    Snapshot {
                        id: r.get(0)?,
                        time_ms: r.get(1)?,
                        protected: r.get(2)?,
                        unchanged: false,
                        held_until_ms: r.get(3)?,
                    },
                    r.get(4)?,
                ))
            },
        )?;
        let mut previous: Option<&[u8]> = None;
        let mut snapshots = Vec::with_capacity(rows.len());
        for (snapshot, root) in &rows {
            snapshots.push(Snapshot {
                unchanged: previous == Some(root.as_slice()),
                ..*snapshot
            });
            previous = Some(root);
        }
        Ok(snapshots)
    }

    /// Forgets what `decisions` keep for no reason, in one transaction,
    /// never a protected snapshot (protection may have come since the
    /// decision); returns the ids forgotten.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn apply_decisions(&mut self, decisions: &[SetDecision]) -> Result<Vec<SnapshotId>> {
        let tx = self.db.write()?;
        let mut forgotten = Vec::new();
        for set in decisions {
            for (id, _) in set.decision.iter().filter(|(_, why)| why.is_empty()) {
                let forget = "DELETE FROM snapshots WHERE id = ?1 AND protected = 0";
                if tx.execute(forget, args![*id])? > 0 {
                    forgotten.push(SnapshotId(*id));
                }
            }
        }
        tx.commit()?;
        Ok(forgotten)
    }

    /// Every client's name by id (removed clients too: their snapshots stay).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn client_names(&self) -> Result<std::collections::HashMap<ClientId, String>> {
        let rows = self.db.rows("SELECT id, name FROM clients", args![], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.into_iter().collect())
    }

    /// Every snapshot's finish time (ms) by id.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn snapshot_times(&self) -> Result<std::collections::HashMap<u64, i64>> {
        let rows = self
            .db
            .rows("SELECT id, finished_at FROM snapshots", args![], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok(rows.into_iter().collect())
    }

    /// Bytes `client` is charged for in the store: its blobs (after dedup
    /// and compression; what no snapshot reaches counts until it is
    /// collected), and what its uploads appended and never indexed (until
    /// the next collection, see [`Catalog::charge_unindexed`]).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn client_stored_bytes(&self, client: ClientId) -> Result<u64> {
        self.db.value(
            "SELECT CAST(COALESCE((SELECT SUM(length * copies) FROM blobs WHERE client_id = ?1), 0)
                  + COALESCE((SELECT unindexed_bytes FROM clients WHERE id = ?1), 0) AS BIGINT)",
            args![client],
        )
    }

    /// Charges `client` for `bytes` an upload appended and never indexed
    /// (refused, abandoned, failed): they take disk until a collection.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn charge_unindexed(&mut self, client: ClientId, bytes: u64, now_ms: i64) -> Result<()> {
        self.db.execute(
            "UPDATE clients SET unindexed_bytes = unindexed_bytes + ?2, unindexed_at = ?3 WHERE id = ?1",
            args![client, bytes.min(i64::MAX as u64), now_ms],
        )?;
        Ok(())
    }

    /// A collection that began at `began_ms` reclaimed what uploads left
    /// unindexed before it: no client is charged for that any more.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn clear_unindexed_before(&mut self, began_ms: i64) -> Result<()> {
        self.db.execute(
            "UPDATE clients SET unindexed_bytes = 0 WHERE unindexed_bytes > 0 AND unindexed_at < ?1",
            args![began_ms],
        )?;
        Ok(())
    }

    /// A client's own quota setting (see `ClientRecord::own_quota`).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn own_quota(&self, client: ClientId) -> Result<Option<Option<u64>>> {
        let value: Option<i64> = self
            .db
            .row(
                "SELECT quota FROM clients WHERE id = ?1",
                args![client],
                |r| r.get(0),
            )?
            .flatten();
        Ok(value.map(|n| u64::try_from(n).ok().filter(|n| *n > 0)))
    }

    /// Sets a client's own quota: `None` back to the relay's default,
    /// `Some(None)` unlimited; false when there is no such client.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_quota(&mut self, name: &str, quota: Option<Option<u64>>) -> Result<bool> {
        let value: Option<i64> =
            quota.map(|q| q.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX)));
        Ok(self.db.execute(
            "UPDATE clients SET quota = ?2 WHERE name = ?1 AND removed_at IS NULL",
            args![name, value],
        )? > 0)
    }

    /// Protects (or unprotects) snapshots; returns the ids that exist.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn protect_snapshots(
        &mut self,
        ids: &[SnapshotId],
        protect: bool,
    ) -> Result<Vec<SnapshotId>> {
        let tx = self.db.write()?;
        let mut found = Vec::new();
        for id in ids {
            if tx.execute(
                "UPDATE snapshots SET protected = ?2 WHERE id = ?1",
                args![id, protect],
            )? > 0
            {
                found.push(*id);
            }
        }
        tx.commit()?;
        Ok(found)
    }
}
