//! The read pool against the PostgreSQL server of this machine (it exists only on PostgreSQL,
//! so this runs whichever backend the rest of the suite targets).

use std::{collections::HashMap, time::Duration};

use rp_config::Config;
use rp_db::sea_orm::sqlx::{self, Row as _};

fn postgres_config(prefix: &str, read_connections: u32) -> Config {
    let vars: HashMap<String, String> = [
        ("RP_DATABASE__URL", rp_test_support::database_url()),
        ("RP_DATABASE__SCHEMA_PREFIX", prefix.to_owned()),
        ("RP_DATABASE__MIN_CONNECTIONS", "1".into()),
        ("RP_DATABASE__MAX_CONNECTIONS", "2".into()),
        ("RP_DATABASE__READ_CONNECTIONS", read_connections.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Config::load(None, &vars).expect("valid configuration")
}

fn prefix() -> String {
    format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

#[tokio::test]
async fn reads_run_in_the_services_schema_and_survive_a_dropped_statement() {
    let prefix = prefix();
    let db = rp_db::connect(&postgres_config(&prefix, 1), "reads").await.expect("connects");
    let reads = db.reads.as_ref().expect("a read pool on PostgreSQL");

    let row = reads
        .fetch_all(sqlx::query(
            "SELECT current_schema() AS schema, current_setting('application_name') AS app",
        ))
        .await
        .expect("runs")
        .pop()
        .expect("one row");
    assert_eq!(row.get::<String, _>("schema"), format!("{prefix}reads"));
    assert_eq!(row.get::<String, _>("app"), "release-pilot-reads-reads");

    // A caller gives up on a long statement: with one connection, the next statement must not
    // wait for the abandoned one (the connection is replaced, not drained).
    let abandoned =
        tokio::time::timeout(Duration::from_millis(200), reads.fetch_all(sqlx::query("SELECT pg_sleep(30)")))
            .await;
    assert!(abandoned.is_err(), "the long statement was cut short by the timeout");
    let next = tokio::time::timeout(
        Duration::from_secs(10),
        reads.fetch_all(sqlx::query("SELECT $1::int AS answer").bind(42)),
    )
    .await
    .expect("the next statement does not wait for the abandoned one")
    .expect("runs");
    assert_eq!(next[0].get::<i32, _>("answer"), 42);

    // A statement that fails (here: a type error) leaves the pool usable too.
    let failed = reads.fetch_all(sqlx::query("SELECT 'x'::int")).await;
    assert!(failed.is_err());
    let after = reads.fetch_all(sqlx::query("SELECT 7 AS n")).await.expect("runs after a failure");
    assert_eq!(after[0].get::<i32, _>("n"), 7);

    drop(db);
    drop_schema(&format!("{prefix}reads")).await;
}

#[tokio::test]
async fn no_read_pool_on_sqlite_or_when_switched_off() {
    let prefix = prefix();
    let off = rp_db::connect(&postgres_config(&prefix, 0), "reads").await.expect("connects");
    assert!(off.reads.is_none());
    drop(off);
    drop_schema(&format!("{prefix}reads")).await;

    let dir = tempfile::tempdir().expect("temporary directory");
    let vars: HashMap<String, String> =
        [("RP_DATA_DIR".to_owned(), dir.path().display().to_string())].into_iter().collect();
    let embedded =
        rp_db::connect(&Config::load(None, &vars).expect("valid"), "reads").await.expect("connects");
    assert!(embedded.reads.is_none());
}

async fn drop_schema(schema: &str) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&rp_test_support::database_url())
        .await
        .expect("connects");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")))
        .execute(&mut conn)
        .await
        .expect("drops the schema");
}
