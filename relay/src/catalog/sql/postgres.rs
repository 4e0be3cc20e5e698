//! [`super::Db`] on PostgreSQL: `?N` parameters rewritten `$N`,
//! statements prepared once per connection, values converted to the types
//! the server inferred, and every call kept off the async threads (the
//! `postgres` client blocks on a runtime of its own).

use std::collections::HashMap;
use std::error::Error;

use bytes::BytesMut;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, Statement};

use super::super::{CatalogError, Result};
use super::{Row, Value};

/// Opens a write transaction: after `BEGIN`, the lock every writer of
/// this catalog takes (a transaction-scoped advisory lock, released at
/// commit or rollback), so writes follow one another as on SQLite.
pub(super) const BEGIN_WRITE: &str = "BEGIN; SELECT pg_advisory_xact_lock(7240305)";

/// Set on every connection: a session idle inside a transaction for a
/// minute (a relay frozen, or cut off, mid-write) is ended by the server,
/// which rolls its transaction back and frees the writers' lock; a writer
/// waits for that lock two minutes at most, then fails with one line.
const SESSION: &str = "SET idle_in_transaction_session_timeout = '60s'; SET lock_timeout = '120s'";

/// A PostgreSQL connection and the statements prepared on it.
pub(crate) struct PgConn {
    url: String,
    /// Always there but while being dropped (see `Drop`).
    client: Option<Client>,
    prepared: HashMap<String, Statement>,
    /// Whether a transaction is open on `client` (never continued on
    /// another connection: its first statements went with the old one).
    in_transaction: bool,
}

impl PgConn {
    /// Connects (without TLS: see ARCHITECTURE.md, the catalog seam).
    pub(super) fn connect(url: &str) -> Result<Self> {
        let client = open(url)?;
        Ok(PgConn {
            url: url.to_owned(),
            client: Some(client),
            prepared: HashMap::new(),
            in_transaction: false,
        })
    }

    /// A new connection in place of one the server closed (a restart, a
    /// failover): the statement that found it closed failed, the next one
    /// runs on the new connection.
    fn reconnect_if_closed(&mut self) -> Result<()> {
        if self.client().is_closed() {
            if self.in_transaction {
                return Err(CatalogError::Unreachable(
                    "the connection closed inside a transaction, which the server rolled back"
                        .into(),
                ));
            }
            tracing::warn!("catalog: the connection to PostgreSQL was closed; connecting again");
            let url = self.url.clone();
            self.client = Some(open(&url)?);
            self.prepared.clear();
        }
        Ok(())
    }

    /// The statement prepared for `sql` with parameters of `args`'
    /// types: integers `BIGINT`, text `TEXT`, bytes `BYTEA`, and a `NULL`
    /// whatever the server infers (so every integer parameter is a
    /// `BIGINT`, as every integer column is, and nothing is left to guess).
    fn statement(&mut self, sql: &str, args: &[Value]) -> Result<Statement> {
        let types: Vec<Type> = args
            .iter()
            .map(|a| match a {
                Value::Null => Type::UNKNOWN,
                Value::Int(_) => Type::INT8,
                Value::Text(_) => Type::TEXT,
                Value::Blob(_) => Type::BYTEA,
            })
            .collect();
        self.reconnect_if_closed()?;
        let key = format!("{types:?}{sql}");
        if let Some(statement) = self.prepared.get(&key) {
            return Ok(statement.clone());
        }
        let text = numbered_parameters(sql);
        let client = self.client();
        let statement = off_runtime(|| client.prepare_typed(&text, &types))?;
        self.prepared.insert(key, statement.clone());
        Ok(statement)
    }

    /// Runs one statement.
    pub(super) fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64> {
        let statement = self.statement(sql, args)?;
        let params = params(args);
        let client = self.client();
        Ok(off_runtime(|| client.execute(&statement, &params))?)
    }

    /// Runs statements without parameters.
    pub(super) fn batch(&mut self, sql: &str) -> Result<()> {
        if sql == "COMMIT" || sql == "ROLLBACK" {
            let ended = std::mem::replace(&mut self.in_transaction, false);
            if ended && self.client().is_closed() && sql == "ROLLBACK" {
                // The server rolled it back when the connection closed.
                return Ok(());
            }
        }
        self.reconnect_if_closed()?;
        let client = self.client();
        let done = off_runtime(|| client.batch_execute(sql));
        if sql.starts_with("BEGIN") {
            if done.is_err() {
                // A `BEGIN` that got no lock leaves no transaction behind.
                let _ = off_runtime(|| client.batch_execute("ROLLBACK"));
            } else {
                self.in_transaction = true;
            }
        }
        Ok(done?)
    }

    /// The first `most` rows of a query (the rest are never fetched).
    pub(super) fn query(&mut self, sql: &str, args: &[Value], most: usize) -> Result<Vec<Row>> {
        let statement = self.statement(sql, args)?;
        let params = params(args);
        let client = self.client();
        let rows = off_runtime(|| {
            let mut found = Vec::new();
            let mut rows = client.query_raw(&statement, params.iter().copied())?;
            while found.len() < most {
                match rows.next()? {
                    Some(r) => found.push(r),
                    None => break,
                }
            }
            Ok::<_, postgres::Error>(found)
        })?;
        rows.iter().map(row).collect()
    }
}

impl PgConn {
    fn client(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("the client is there until dropped")
    }
}

impl Drop for PgConn {
    /// Closes the connection where blocking is allowed (the client blocks
    /// on its own runtime to say goodbye).
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            off_runtime(move || drop(client));
        }
    }
}

/// Connects, with the session settings of [`SESSION`].
fn open(url: &str) -> Result<Client> {
    let (url, tls) = super::postgres_tls::target(url)?;
    off_runtime(|| {
        let mut client = Client::connect(&url, tls)?;
        client.batch_execute(SESSION)?;
        Ok::<_, postgres::Error>(client)
    })
    .map_err(|e| super::postgres_tls::explained(&e).unwrap_or_else(|| CatalogError::from(e)))
}

fn params(args: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

/// Runs a blocking call of the client where blocking is allowed: outside
/// any runtime as it is, inside a multi-threaded one after telling it so,
/// inside a current-thread one on a thread of its own.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Err(_) => f(),
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
    }
}

/// `?N` parameters as PostgreSQL's `$N` (outside quoted text).
pub(super) fn numbered_parameters(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote = None;
    for c in sql.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if q == c => quote = None,
            (None, '?') => {
                out.push('$');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// A row's columns as [`Value`]s, by the types PostgreSQL gave them.
fn row(r: &postgres::Row) -> Result<Row> {
    let mut values = Vec::with_capacity(r.len());
    for (i, column) in r.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *ty == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob)
        } else if [Type::TEXT, Type::VARCHAR, Type::NAME, Type::BPCHAR].contains(ty) {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        } else {
            return Err(CatalogError::Value(format!(
                "column {} is of type {ty}, which the catalog does not read (cast it to BIGINT)",
                column.name()
            )));
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Value::Int(i) if *ty == Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
            Value::Int(i) if *ty == Type::BOOL => (*i != 0).to_sql(ty, out),
            Value::Int(i) if *ty == Type::TEXT => i.to_string().to_sql(ty, out),
            Value::Int(i) => i.to_sql(ty, out),
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

impl From<postgres::Error> for CatalogError {
    fn from(e: postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let line = format!("{}: {}", db.code().code(), db.message());
            return if *db.code() == postgres::error::SqlState::DISK_FULL {
                CatalogError::DiskFull(line)
            } else if ["08", "57P"]
                .iter()
                .any(|class| db.code().code().starts_with(class))
            {
                // The connection failed, or the server is shutting down
                // or starting: the catalog cannot be reached just now.
                CatalogError::Unreachable(line)
            } else if db.code().code().starts_with("23") {
                CatalogError::Conflict(line)
            } else {
                CatalogError::Postgres(line)
            };
        }
        let lost = e.is_closed()
            || e.source()
                .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
        if lost {
            CatalogError::Unreachable(e.to_string())
        } else {
            CatalogError::Postgres(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::numbered_parameters;

    #[test]
    fn parameters_are_numbered_outside_quotes_only() {
        assert_eq!(
            numbered_parameters("SELECT \"offset\" FROM t WHERE a = ?1 AND b = '?2' AND c = ?12"),
            "SELECT \"offset\" FROM t WHERE a = $1 AND b = '?2' AND c = $12"
        );
    }
}
