//! `sslmode` and `sslrootcert` against a TLS-only server and a plaintext
//! one: what connects, what is refused, and how each refusal is worded.

use tally_adapters_postgres::PgStore;
use tally_domain::error::StoreError;
use tally_tests::pg::{TestDatabase, TlsCluster, fresh_database, tls_server, with_params};
use tally_tests::tls::TestCa;

async fn server() -> &'static TlsCluster {
    tokio::task::spawn_blocking(tls_server).await.unwrap().unwrap()
}

/// A URL for `db` on the TLS server by `host`, with only `params`.
fn url(server: &TlsCluster, db: &TestDatabase, host: &str, params: &[(&str, &str)]) -> String {
    let base = format!("postgres://postgres@{host}:{}/{}", server.port(), db.name);
    with_params(&base, params)
}

/// Whether the store's connection is encrypted, as the server sees it.
async fn encrypted(store: &PgStore) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// The refusal of `url`: never retryable, and its text.
async fn refusal(url: &str) -> String {
    let err = PgStore::connect(url).await.expect_err(url);
    assert!(!err.is_retryable(), "a TLS failure is not 'unavailable': {err}");
    assert!(matches!(err, StoreError::Other { .. }), "{err}");
    err.to_string()
}

#[tokio::test]
async fn verify_full_with_the_servers_ca_connects_encrypted_and_migrates() {
    let server = server().await;
    let db = server.fresh_database().await;
    assert!(db.url.contains("sslmode=verify-full"), "{}", db.url);
    let store = PgStore::connect(&db.url).await.unwrap();
    assert!(encrypted(&store).await);
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(applied > 0);
}

#[tokio::test]
async fn every_sslmode_against_a_tls_only_server_behaves_as_in_libpq() {
    let server = server().await;
    let db = server.fresh_database().await;
    let ca = server.ca().path().display().to_string();
    let other = TestCa::new("someone else's CA");
    let wrong = other.path().display().to_string();

    // Connects, always over TLS.
    for params in [
        &[("sslmode", "allow")][..],
        &[("sslmode", "prefer")],
        &[],
        &[("sslmode", "require")],
        &[("sslmode", "verify-ca"), ("sslrootcert", &ca)],
        &[("sslmode", "verify-full"), ("sslrootcert", &ca)],
    ] {
        let store = PgStore::connect(&url(server, &db, "127.0.0.1", params))
            .await
            .unwrap_or_else(|e| panic!("{params:?}: {e}"));
        assert!(encrypted(&store).await, "{params:?}");
        store.pool().close().await;
    }

    let plaintext = refusal(&url(server, &db, "127.0.0.1", &[("sslmode", "disable")])).await;
    assert!(plaintext.contains("requires TLS"), "{plaintext}");
    assert!(
        plaintext.contains("no encryption"),
        "the server's own words: {plaintext}"
    );

    for params in [
        &[("sslmode", "verify-full"), ("sslrootcert", &wrong)][..],
        &[("sslmode", "verify-ca"), ("sslrootcert", &wrong)],
        // libpq verifies under require once a CA file is given.
        &[("sslmode", "require"), ("sslrootcert", &wrong)],
        // The public roots do not hold the test CA.
        &[("sslrootcert", "system")],
    ] {
        let text = refusal(&url(server, &db, "127.0.0.1", params)).await;
        assert!(text.contains("not trusted"), "{params:?}: {text}");
    }

    // The certificate names 127.0.0.1 only.
    let mismatch = refusal(&url(
        server,
        &db,
        "localhost",
        &[("sslmode", "verify-full"), ("sslrootcert", &ca)],
    ))
    .await;
    assert!(
        mismatch.contains("hostname mismatch") && mismatch.contains("localhost"),
        "{mismatch}"
    );
    // sqlx 0.8 with current rustls checks the name under verify-ca too
    // (README: differences from libpq); the refusal says so.
    let verify_ca = refusal(&url(
        server,
        &db,
        "localhost",
        &[("sslmode", "verify-ca"), ("sslrootcert", &ca)],
    ))
    .await;
    assert!(
        verify_ca.contains("hostname mismatch") && verify_ca.contains("verify-ca"),
        "{verify_ca}"
    );
}

#[tokio::test]
async fn a_plaintext_server_is_refused_only_where_tls_is_required() {
    let db = fresh_database().await;
    for mode in ["disable", "allow", "prefer"] {
        let store = PgStore::connect(&with_params(&db.url, &[("sslmode", mode)]))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(!encrypted(&store).await, "{mode}");
        store.pool().close().await;
    }
    let text = refusal(&with_params(&db.url, &[("sslmode", "require")])).await;
    assert!(text.contains("does not support TLS"), "{text}");
}
