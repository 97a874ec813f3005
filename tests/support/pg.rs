//! A throwaway PostgreSQL database for a test: created on the local server (Unix socket,
//! `$PILOT_TEST_PG_HOST`, default /var/run/postgresql, as the current OS user, which must be
//! allowed to create databases: `.ci/run` makes root a superuser) and dropped on drop.
//!
//! When no server answers, [`TestDb::create`] says so loudly on stderr and returns `None` (the
//! test returns early); under CI (`CI` set) it panics instead: CI must run these tests.

use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The socket directory of the test server.
pub fn host() -> String {
    std::env::var("PILOT_TEST_PG_HOST").unwrap_or_else(|_| "/var/run/postgresql".into())
}

/// A connection URL for database `db` on the test server.
pub fn url(db: &str) -> String {
    let host = host().replace('/', "%2F");
    format!("postgresql://{host}/{db}")
}

/// Runs `sql` on the server's `postgres` database, on a thread and runtime of its own (so it
/// works from sync and async tests alike).
pub fn admin(sql: &str) -> Result<(), String> {
    let (sql, url) = (sql.to_string(), url("postgres"));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            c.batch_execute(&sql).await.map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "admin thread panicked".to_string())?
}

/// A database that exists for one test.
pub struct TestDb {
    /// Its name.
    pub name: String,
}

impl TestDb {
    /// Creates a fresh database, or `None` (loudly) when there is no PostgreSQL server.
    pub fn create() -> Option<TestDb> {
        let name = format!(
            "pilot_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            pilot::clock::unix_ms_now() % 1_000_000
        );
        match admin(&format!("CREATE DATABASE {name}")) {
            Ok(()) => Some(TestDb { name }),
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("PostgreSQL is required under CI (.ci/run installs and starts it): {e}")
            }
            Err(e) => {
                eprintln!(
                    "\n!!! SKIPPED: no PostgreSQL server at {} ({e}).\n!!! Install and start it (apt-get install postgresql; pg_ctlcluster VERSION main start;\n!!! su postgres -c 'createuser -s root') to run the PostgreSQL registry tests.\n",
                    host()
                );
                None
            }
        }
    }

    /// Its connection URL.
    pub fn url(&self) -> String {
        url(&self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Err(e) = admin(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}
