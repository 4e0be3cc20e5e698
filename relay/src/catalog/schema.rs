//! The catalog's schema: SQLite's migrations, one transaction per step
//! (`PRAGMA user_version` counts them), and PostgreSQL's schema, equal to
//! SQLite's after migration [`POSTGRES_BASE`], with the steps after it
//! (written for both engines) on top.

use super::sql::args;
use super::{Catalog, Result};

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: clients and pairings.
    "CREATE TABLE clients (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        public_key BLOB NOT NULL,
        hostname TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        removed_at INTEGER,
        last_seen_at INTEGER,
        last_address TEXT
    );
    CREATE UNIQUE INDEX clients_active_name ON clients(name) WHERE removed_at IS NULL;
    CREATE UNIQUE INDEX clients_active_key ON clients(public_key) WHERE removed_at IS NULL;
    CREATE TABLE pairings (
        id INTEGER PRIMARY KEY,
        nameplate INTEGER NOT NULL,
        secret TEXT NOT NULL,
        client_name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL CHECK (state IN ('pending', 'used', 'burned', 'expired')),
        client_id INTEGER REFERENCES clients(id)
    );
    CREATE UNIQUE INDEX pairings_pending_nameplate ON pairings(nameplate) WHERE state = 'pending';",
    // 2: backup sets, the blob index (chunks, signatures, trees, contents) and snapshots.
    "CREATE TABLE backup_sets (
        id INTEGER PRIMARY KEY,
        client_id INTEGER NOT NULL REFERENCES clients(id),
        name TEXT NOT NULL,
        UNIQUE (client_id, name)
    );
    CREATE TABLE blobs (
        client_id INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        id BLOB NOT NULL,
        pack INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        length INTEGER NOT NULL,
        compressed INTEGER NOT NULL,
        PRIMARY KEY (client_id, kind, id)
    ) WITHOUT ROWID;
    CREATE INDEX blobs_by_pack ON blobs(pack);
    CREATE TABLE snapshots (
        id INTEGER PRIMARY KEY,
        client_id INTEGER NOT NULL REFERENCES clients(id),
        set_id INTEGER NOT NULL REFERENCES backup_sets(id),
        root BLOB NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER NOT NULL,
        files INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    );
    CREATE INDEX snapshots_by_set ON snapshots(client_id, set_id, id);",
    // 3: bandwidth limits set on a running relay.
    "ALTER TABLE clients ADD COLUMN rate_limit TEXT;
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 4: what a client may do over the internet.
    "ALTER TABLE clients ADD COLUMN internet_full_backups INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE clients ADD COLUMN internet_max_file INTEGER;",
    // 5: when each blob was indexed, for the garbage collector's grace period.
    "ALTER TABLE blobs ADD COLUMN stored_at INTEGER NOT NULL DEFAULT 0;",
    // 6: snapshot ids are never reused (a `restore -b 7` written down last
    // week must never restore another snapshot that took the number).
    "CREATE TABLE snapshots_v6 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        client_id INTEGER NOT NULL REFERENCES clients(id),
        set_id INTEGER NOT NULL REFERENCES backup_sets(id),
        root BLOB NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER NOT NULL,
        files INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    );
    INSERT INTO snapshots_v6 SELECT id, client_id, set_id, root, started_at, finished_at, files, bytes FROM snapshots;
    DROP TABLE snapshots;
    ALTER TABLE snapshots_v6 RENAME TO snapshots;
    CREATE INDEX snapshots_by_set ON snapshots(client_id, set_id, id);",
    // 7: verification. `state`: 0 whole, 1 damaged (its bytes are wrong:
    // treated as missing, so a backup that holds the data sends it again),
    // 2 incomplete (whole, but something it reaches is damaged: readable for
    // restores, missing to uploads so they send it again). `damage`: what
    // verify found, and when a backup healed it.
    "ALTER TABLE blobs ADD COLUMN state INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE blobs ADD COLUMN verified_at INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE damage (
        id INTEGER PRIMARY KEY,
        client_id INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        blob BLOB NOT NULL,
        pack INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        length INTEGER NOT NULL,
        reason TEXT NOT NULL,
        found_at INTEGER NOT NULL,
        healed_at INTEGER,
        snapshots TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX damage_by_blob ON damage(client_id, kind, blob);
    CREATE INDEX blobs_not_whole ON blobs(client_id) WHERE state != 0;",
    // 8: the newest handshake timestamp accepted per key, so a captured
    // first message gets no answer after a restart either.
    "CREATE TABLE handshakes (
        public_key BLOB PRIMARY KEY,
        secs INTEGER NOT NULL,
        nanos INTEGER NOT NULL
    );",
    // 9: the trees an open upload sent, durable but not yet checked by its
    // commit (see `staged.rs`); emptied at every start.
    "CREATE TABLE staged_trees (
        upload INTEGER NOT NULL,
        client_id INTEGER NOT NULL,
        id BLOB NOT NULL,
        pack INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        length INTEGER NOT NULL,
        compressed INTEGER NOT NULL,
        PRIMARY KEY (upload, id)
    ) WITHOUT ROWID;",
    // 10: retention decided by the relay: its rules per client (`set_name`
    // '') or per set, the endpoint's last hints per set (they may only add
    // to what the rules keep), snapshots the admin protected, and quotas.
    "CREATE TABLE retention_rules (
        client_id INTEGER NOT NULL,
        set_name TEXT NOT NULL,
        rules TEXT NOT NULL,
        PRIMARY KEY (client_id, set_name)
    );
    ALTER TABLE backup_sets ADD COLUMN hints TEXT;
    ALTER TABLE snapshots ADD COLUMN protected INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE clients ADD COLUMN quota INTEGER;",
    // 11: a snapshot the relay holds until a time (the one before a
    // suspicious backup), whatever retention says.
    "ALTER TABLE snapshots ADD COLUMN held_until INTEGER NOT NULL DEFAULT 0;",
    // 12: bytes a client's uploads appended and never indexed (refused,
    // abandoned): charged to its quota until a collection after them.
    "ALTER TABLE clients ADD COLUMN unindexed_bytes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE clients ADD COLUMN unindexed_at INTEGER NOT NULL DEFAULT 0;",
    // 13: trees and contents are stored twice, one copy right after the
    // other (`copies` 2): `verify` repairs a rotten byte from the copy.
    "ALTER TABLE blobs ADD COLUMN copies INTEGER NOT NULL DEFAULT 1;",
    // 14: a pairing code may hand an existing client to a new machine (a
    // lost laptop's): `replaces` names the client; the keys it had are kept.
    "ALTER TABLE pairings ADD COLUMN replaces INTEGER REFERENCES clients(id);
    CREATE TABLE replaced_keys (
        client_id INTEGER NOT NULL REFERENCES clients(id),
        public_key BLOB NOT NULL,
        hostname TEXT NOT NULL,
        replaced_at INTEGER NOT NULL
    );",
    // 15: each client's vault key wrapped under its owner's passphrase and
    // to the organisation's recovery recipient (opaque here), for a new
    // machine or the operator to recover.
    "CREATE TABLE key_wraps (
        client_id INTEGER PRIMARY KEY REFERENCES clients(id),
        wrapped BLOB,
        recovery BLOB,
        updated_at INTEGER NOT NULL
    );",
    // 16: sealed clients (chosen at pairing) and sealed snapshots, whose
    // root is a sealed object (kind 4) rather than a tree (kind 2).
    "ALTER TABLE clients ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE snapshots ADD COLUMN root_kind INTEGER NOT NULL DEFAULT 2;",
    // 17: each snapshot's label (the host and paths it covers), opaque:
    // sealed under the vault for a sealed client.
    "ALTER TABLE snapshots ADD COLUMN label BLOB;",
    // 18: the relays sharing this catalog (each its own id, in the name of
    // every pack it writes), and leases on work only one may do at a time.
    "CREATE TABLE relays (
        id INTEGER PRIMARY KEY,
        holder TEXT NOT NULL UNIQUE,
        registered_at INTEGER NOT NULL
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        relay INTEGER NOT NULL,
        token INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );",
    // 19: when each relay last said it was up (0: it stopped cleanly).
    "ALTER TABLE relays ADD COLUMN seen_at INTEGER NOT NULL DEFAULT 0;",
    // 20: packs a collection emptied, deleted a grace period later (in a
    // store shared by relays, one may still be reading them).
    "CREATE TABLE condemned_packs (
        pack INTEGER PRIMARY KEY,
        condemned_at INTEGER NOT NULL
    );",
];

/// The catalog's schema on PostgreSQL, equal to SQLite's after the
/// migration numbered [`POSTGRES_BASE`]; later migrations are written for
/// both engines.
pub(super) const POSTGRES_SCHEMA: &str = include_str!("schema/postgres.sql");

/// The SQLite migration the PostgreSQL schema stands for.
pub(super) const POSTGRES_BASE: usize = 20;

impl Catalog {
    pub(super) fn migrate(&mut self) -> Result<()> {
        let tx = self.db.write()?;
        let version: usize = tx.value("PRAGMA user_version", args![])?;
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.batch(step)?;
            tx.batch(&format!("PRAGMA user_version = {}", i + 1))?;
        }
        tx.commit()
    }

    /// Migrates a PostgreSQL catalog: its schema at once on an empty
    /// database, then each later step; under the writers' lock, so relays
    /// starting together migrate once.
    pub(super) fn migrate_postgres(&mut self) -> Result<()> {
        let tx = self.db.write()?;
        let made: bool = tx.value("SELECT to_regclass('ferry_schema') IS NOT NULL", args![])?;
        if !made {
            tx.batch("CREATE TABLE ferry_schema (version BIGINT NOT NULL)")?;
        }
        let version: Option<usize> =
            tx.row("SELECT version FROM ferry_schema", args![], |r| r.get(0))?;
        let mut version = match version {
            Some(version) => version,
            None => {
                tx.batch(POSTGRES_SCHEMA)?;
                tx.execute(
                    "INSERT INTO ferry_schema (version) VALUES (?1)",
                    args![POSTGRES_BASE],
                )?;
                POSTGRES_BASE
            }
        };
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.batch(step)?;
            version = i + 1;
            tx.execute("UPDATE ferry_schema SET version = ?1", args![version])?;
        }
        tx.commit()
    }
}
