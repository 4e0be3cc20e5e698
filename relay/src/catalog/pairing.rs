//! Pairing codes: created by `ferry-relay pair`, looked up by nameplate,
//! burned after failures, completed into a client.

use super::sql::{args, Tx};
use ferry_protocol::keys::PublicKey;
use ferry_protocol::pairing::PairingCode;

use super::clients::client_where;
use super::{Catalog, CatalogError, ClientId, ClientRecord, Result, MAX_PAIRING_FAILURES};

/// A pending pairing found by nameplate.
#[derive(Debug)]
pub struct PendingPairing {
    /// Row id.
    pub id: i64,
    /// The full code.
    pub code: PairingCode,
    /// The client name the operator chose.
    pub client_name: String,
}

/// What a nameplate leads to.
#[derive(Debug)]
pub enum PairingLookup {
    /// A live code.
    Pending(PendingPairing),
    /// The newest code with this nameplate has expired.
    Expired,
    /// The newest code with this nameplate was burned by wrong attempts.
    Burned,
    /// The newest code with this nameplate has been used.
    Used,
    /// No code has this nameplate.
    Unknown,
}

/// The state of one pairing, for `ferry-relay pair` waiting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairingState {
    /// Still waiting for the endpoint.
    Pending,
    /// Used by the client with this record.
    Used(Box<ClientRecord>),
    /// Burned by wrong attempts.
    Burned,
    /// Expired unused.
    Expired,
}

/// Outcome of completing a pairing.
#[derive(Debug)]
pub enum PairOutcome {
    /// The client was created.
    Paired(Box<ClientRecord>),
    /// An existing client was handed to this key (`pair --replace`); the
    /// fingerprint of the key it had, now refused.
    Replaced(Box<ClientRecord>, String),
    /// The code stopped being valid meanwhile (expired, burned or used).
    NoLongerValid,
    /// This key already belongs to an active client of that name.
    KeyAlreadyPaired(String),
    /// Another active client took the name meanwhile.
    NameTaken,
}

impl Catalog {
    /// Registers a pending pairing for a new client `client_name`, valid
    /// until `expires_ms`. A pending code for the same name is replaced.
    /// Returns its id and code. `random` (from the OS) picks the secret
    /// (its low half) and, among the free nameplates, the nameplate.
    ///
    /// # Errors
    /// SQLite errors; the inner error is a message for the operator (the
    /// name is taken, or no nameplate is free).
    pub fn create_pairing(
        &mut self,
        client_name: &str,
        now: i64,
        expires_ms: i64,
        random: u64,
    ) -> Result<Result<(i64, PairingCode), String>> {
        self.new_pairing(client_name, now, expires_ms, random, false)
    }

    /// Like [`Catalog::create_pairing`], for a code that hands the paired
    /// client `client_name` (its sets, snapshots, quota and retention) to
    /// the endpoint that uses it, and revokes the key it had: the
    /// lost-laptop drill.
    ///
    /// # Errors
    /// As [`Catalog::create_pairing`]; the inner error when no client of
    /// that name is paired.
    pub fn create_replacing_pairing(
        &mut self,
        client_name: &str,
        now: i64,
        expires_ms: i64,
        random: u64,
    ) -> Result<Result<(i64, PairingCode), String>> {
        self.new_pairing(client_name, now, expires_ms, random, true)
    }

    fn new_pairing(
        &mut self,
        client_name: &str,
        now: i64,
        expires_ms: i64,
        random: u64,
        replace: bool,
    ) -> Result<Result<(i64, PairingCode), String>> {
        let tx = self.db.write()?;
        let existing: Option<ClientId> = tx.row(
            "SELECT id FROM clients WHERE name = ?1 AND removed_at IS NULL",
            args![client_name],
            |r| r.get(0),
        )?;
        match (existing, replace) {
            (Some(_), false) => {
                return Ok(Err(format!(
                    "a client named {client_name:?} is already paired; to move it to a new machine (its old key is then refused), `ferry-relay pair --name {client_name} --replace`; to drop it, `ferry-relay clients remove {client_name}`"
                )))
            }
            (None, true) => {
                return Ok(Err(format!(
                    "no client named {client_name:?} is paired, so there is none to replace; pair a new one without --replace"
                )))
            }
            _ => {}
        }
        tx.execute(
            "UPDATE pairings SET state = 'expired' WHERE state = 'pending' AND (expires_at <= ?1 OR client_name = ?2)",
            args![now, client_name],
        )?;
        let used: Vec<u32> = tx.rows(
            "SELECT nameplate FROM pairings WHERE state = 'pending'",
            args![],
            |r| r.get(0),
        )?;
        let free: Vec<u32> = (1..=ferry_protocol::pairing::MAX_NAMEPLATE)
            .filter(|n| !used.contains(n))
            .collect();
        if free.is_empty() {
            return Ok(Err(
                "too many pending pairings; wait for some to expire".into()
            ));
        }
        let nameplate = free[(random >> 32) as usize % free.len()];
        let code = PairingCode::new(nameplate, random as u32).expect("nameplate in range");
        let id: i64 = tx.value(
            "INSERT INTO pairings (nameplate, secret, client_name, created_at, expires_at, state, replaces)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6) RETURNING id",
            args![
                nameplate,
                code.secret_digits(),
                client_name,
                now,
                expires_ms,
                existing
            ],
                )?;
        tx.commit()?;
        Ok(Ok((id, code)))
    }

    /// Finds the newest pairing with `nameplate`, expiring it if its time is up.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn find_pairing(&mut self, nameplate: u32, now: i64) -> Result<PairingLookup> {
        let tx = self.db.write()?;
        let row = tx.row(
            "SELECT id, secret, client_name, expires_at, state FROM pairings
                 WHERE nameplate = ?1 ORDER BY id DESC LIMIT 1",
            args![nameplate],
            |r| {
                Ok((
                    r.get::<i64>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                    r.get::<i64>(3)?,
                    r.get::<String>(4)?,
                ))
            },
        )?;
        let lookup = match row {
            None => PairingLookup::Unknown,
            Some((id, _, _, expires, state)) if state == "pending" && expires <= now => {
                tx.execute(
                    "UPDATE pairings SET state = 'expired' WHERE id = ?1",
                    args![id],
                )?;
                PairingLookup::Expired
            }
            Some((id, secret, client_name, _, state)) if state == "pending" => {
                match PairingCode::from_parts(nameplate, &secret) {
                    Ok(code) => PairingLookup::Pending(PendingPairing {
                        id,
                        code,
                        client_name,
                    }),
                    Err(_) => PairingLookup::Unknown,
                }
            }
            Some((.., state)) if state == "burned" => PairingLookup::Burned,
            Some((.., state)) if state == "used" => PairingLookup::Used,
            Some(_) => PairingLookup::Expired,
        };
        tx.commit()?;
        Ok(lookup)
    }

    /// Counts a wrong attempt; returns the attempts left (0: now burned).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn record_pairing_failure(&mut self, id: i64) -> Result<u32> {
        let tx = self.db.write()?;
        let failures: u32 = tx.value(
            "UPDATE pairings SET failures = failures + 1 WHERE id = ?1 RETURNING failures",
            args![id],
        )?;
        if failures >= MAX_PAIRING_FAILURES {
            tx.execute(
                "UPDATE pairings SET state = 'burned' WHERE id = ?1 AND state = 'pending'",
                args![id],
            )?;
        }
        tx.commit()?;
        Ok(MAX_PAIRING_FAILURES.saturating_sub(failures))
    }

    /// Turns a proven pairing into a client, in one transaction: a new one
    /// in the mode the endpoint asked for (`sealed`), or, for a machine
    /// taking over a client, that client in its own mode.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn complete_pairing(
        &mut self,
        pairing_id: i64,
        key: &PublicKey,
        hostname: &str,
        sealed: bool,
        now: i64,
    ) -> Result<PairOutcome> {
        let tx = self.db.write()?;
        let row: Option<(String, i64, String, Option<ClientId>)> = tx.row(
            "SELECT client_name, expires_at, state, replaces FROM pairings WHERE id = ?1",
            args![pairing_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let Some((name, expires, state, replaces)) = row else {
            return Ok(PairOutcome::NoLongerValid);
        };
        if state != "pending" || expires <= now {
            return Ok(PairOutcome::NoLongerValid);
        }
        if let Some(existing) = tx.row(
            "SELECT name FROM clients WHERE public_key = ?1 AND removed_at IS NULL",
            args![&key.0],
            |r| r.get::<String>(0),
        )? {
            return Ok(PairOutcome::KeyAlreadyPaired(existing));
        }
        if let Some(client) = replaces {
            return hand_over(tx, pairing_id, client, key, hostname, now);
        }
        let inserted = tx.value::<i64>(
            "INSERT INTO clients (name, public_key, hostname, created_at, sealed) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
            args![name, &key.0, hostname, now, sealed],
        );
        if let Err(CatalogError::Conflict(_)) = &inserted {
            return Ok(PairOutcome::NameTaken);
        }
        let id = inserted?;
        tx.execute(
            "UPDATE pairings SET state = 'used', client_id = ?2 WHERE id = ?1",
            args![pairing_id, id],
        )?;
        let record = client_where(&tx, "id = ?1", id)?.expect("just inserted");
        tx.commit()?;
        Ok(PairOutcome::Paired(Box::new(record)))
    }

    /// The keys client `name` had before `pair --replace` handed it to new
    /// machines, newest first: fingerprint, host name and when.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn replaced_keys(&self, client: ClientId) -> Result<Vec<(String, String, i64)>> {
        self.db.rows(
            "SELECT public_key, hostname, replaced_at FROM replaced_keys
             WHERE client_id = ?1 ORDER BY replaced_at DESC, rowid DESC",
            args![client],
            |r| {
                let key: Vec<u8> = r.get(0)?;
                Ok((fingerprint_of(&key), r.get(1)?, r.get(2)?))
            },
        )
    }

    /// The state of the pairing with row `id`, for waiting on it.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn pairing_state(&self, id: i64, now: i64) -> Result<PairingState> {
        let (state, expires, client): (String, i64, Option<i64>) = self
            .db
            .row(
                "SELECT state, expires_at, client_id FROM pairings WHERE id = ?1",
                args![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .ok_or_else(|| CatalogError::Value(format!("no pairing {id}")))?;
        Ok(match state.as_str() {
            "pending" if expires > now => PairingState::Pending,
            "used" => match client {
                Some(id) => client_where(&self.db, "id = ?1", id)?
                    .map_or(PairingState::Expired, |c| PairingState::Used(Box::new(c))),
                None => PairingState::Expired,
            },
            "burned" => PairingState::Burned,
            _ => PairingState::Expired,
        })
    }
}

/// Hands `client` to `key` (a `pair --replace` code used): its old key is
/// kept in `replaced_keys` and refused from now on; its sets, snapshots,
/// quota and retention stay its own.
fn hand_over(
    tx: Tx<'_>,
    pairing_id: i64,
    client: ClientId,
    key: &PublicKey,
    hostname: &str,
    now: i64,
) -> Result<PairOutcome> {
    let moved = tx.execute(
        "INSERT INTO replaced_keys (client_id, public_key, hostname, replaced_at)
         SELECT id, public_key, hostname, ?2 FROM clients WHERE id = ?1 AND removed_at IS NULL",
        args![client, now],
    )?;
    if moved == 0 {
        // Removed since the code was made.
        return Ok(PairOutcome::NoLongerValid);
    }
    let old: Vec<u8> = tx.value(
        "SELECT public_key FROM clients WHERE id = ?1",
        args![client],
    )?;
    tx.execute(
        "UPDATE clients SET public_key = ?2, hostname = ?3 WHERE id = ?1",
        args![client, &key.0, hostname],
    )?;
    tx.execute(
        "UPDATE pairings SET state = 'used', client_id = ?2 WHERE id = ?1",
        args![pairing_id, client],
    )?;
    let record = client_where(&tx, "id = ?1", client)?.expect("the client exists");
    tx.commit()?;
    Ok(PairOutcome::Replaced(
        Box::new(record),
        fingerprint_of(&old),
    ))
}

/// The fingerprint of a stored public key.
fn fingerprint_of(key: &[u8]) -> String {
    <[u8; 32]>::try_from(key)
        .map(|bytes| PublicKey(bytes).fingerprint().to_string())
        .unwrap_or_else(|_| "(malformed key)".into())
}
