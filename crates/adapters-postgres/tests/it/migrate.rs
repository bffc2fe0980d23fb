use tally_adapters_postgres::PgStore;
use tally_tests::pg::fresh_database;

#[tokio::test]
async fn replicas_can_migrate_at_once() {
    let db = fresh_database().await;
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { PgStore::connect(&url).await.map(|s| s.pool().clone()) })
        })
        .collect();
    let mut pools = Vec::new();
    for t in tasks {
        pools.push(t.await.unwrap().expect("every replica migrates"));
    }
    let store = PgStore::from_pool(pools[0].clone());
    store.migrate().await.expect("migrating again is a no-op");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(applied, tally_adapters_postgres::MIGRATOR.iter().count() as i64);
}

#[tokio::test]
async fn the_schema_rejects_impossible_rows() {
    let db = fresh_database().await;
    let store = PgStore::connect(&db.url).await.unwrap();
    let insert = |method: &str, requests: i64, end_offset: &str| {
        format!(
            "INSERT INTO workspace_app_stats VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), \
             gen_random_uuid(), '{method}', 'x', now(), now() + interval '{end_offset}', {requests})"
        )
    };
    for (sql, constraint) in [
        (insert("ssh", 1, "1 s"), "access_method"),
        (insert("path", -1, "1 s"), "requests"),
        (insert("path", 1, "-1 s"), "session"),
    ] {
        let err = sqlx::query(&sql).execute(store.pool()).await.unwrap_err();
        let mapped = tally_adapters_postgres::map_sqlx_error(err);
        assert!(
            matches!(&mapped, tally_domain::error::StoreError::Invalid { .. })
                && tally_domain::error::Report(&mapped)
                    .to_string()
                    .contains(constraint),
            "{mapped:?}"
        );
    }
    sqlx::query(&insert("terminal", 0, "0 s"))
        .execute(store.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_migration_status_reads_the_history_without_writing() {
    use tally_adapters_postgres::{MigrationState, PgStoreOptions};
    let db = fresh_database().await;
    let unmigrated = PgStore::connect_with(
        &db.url,
        PgStoreOptions {
            migrate: false,
            ..PgStoreOptions::default()
        },
    )
    .await
    .unwrap();
    let known = tally_adapters_postgres::MIGRATOR.iter().count();
    let status = unmigrated.migration_status().await.unwrap();
    assert_eq!(status.entries.len(), known);
    assert!(status.entries.iter().all(|e| e.state == MigrationState::Pending));
    assert!(!status.is_current());
    let history: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(unmigrated.pool())
        .await
        .unwrap();
    assert_eq!(history, None, "reading the status created no table");

    unmigrated.migrate().await.unwrap();
    let status = unmigrated.migration_status().await.unwrap();
    assert!(status.is_current(), "{}", status.summary());
    assert_eq!(status.with_state("applied").count(), known);

    // A newer tally's migration: listed, and the schema is still current.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', true, '\\x00', 1)",
    )
    .execute(unmigrated.pool())
    .await
    .unwrap();
    let status = unmigrated.migration_status().await.unwrap();
    assert!(status.is_current(), "{}", status.summary());
    let newer: Vec<_> = status.with_state("unknown to this tally").collect();
    assert_eq!(newer.len(), 1);
    assert_eq!(newer[0].name(), "9999 from the future");

    // An applied migration whose file changed since: not current.
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x01' WHERE version = 1")
        .execute(unmigrated.pool())
        .await
        .unwrap();
    let status = unmigrated.migration_status().await.unwrap();
    assert!(!status.is_current());
    assert_eq!(status.entries[0].state.label(), "modified");
}
