//! [`super::Db`] on SQLite: statements cached per connection, rows
//! streamed.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;

use super::super::Result;
use super::{Row, Value};

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// Runs one statement.
pub(super) fn execute(conn: &Connection, sql: &str, args: &[Value]) -> Result<u64> {
    let changed = conn
        .prepare_cached(sql)?
        .execute(rusqlite::params_from_iter(args))?;
    Ok(changed as u64)
}

/// Streams a query's rows through `f` while it says to go on.
pub(super) fn scan(
    conn: &Connection,
    sql: &str,
    args: &[Value],
    mut f: impl FnMut(&Row) -> Result<bool>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let mut row = Row::default();
    while let Some(r) = rows.next()? {
        row.0.clear();
        for i in 0..columns {
            row.0.push(match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => Value::Int(i),
                ValueRef::Real(f) => Value::Int(f as i64),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            });
        }
        if !f(&row)? {
            break;
        }
    }
    Ok(())
}
