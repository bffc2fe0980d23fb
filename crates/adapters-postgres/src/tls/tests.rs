use std::collections::HashMap;

use sqlx::postgres::PgSslMode;
use tally_tests::tls::TestCa;

use super::*;

const URL: &str = "postgres://u:pw@db.example:5432/tally";

fn plan(query: &str, env: &[(&str, &str)]) -> Result<ConnectPlan, String> {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    let url = if query.is_empty() {
        URL.to_owned()
    } else {
        format!("{URL}?{query}")
    };
    ConnectPlan::resolve(&url, &|name| env.get(name).cloned()).map_err(|e| e.to_string())
}

/// The sslmode sqlx is given for the first attempt and for the TLS retry.
fn modes(p: &ConnectPlan) -> (PgSslMode, Option<PgSslMode>) {
    (
        p.options.get_ssl_mode(),
        p.tls_fallback.as_ref().map(PgConnectOptions::get_ssl_mode),
    )
}

fn is(mode: PgSslMode, expected: PgSslMode) -> bool {
    std::mem::discriminant(&mode) == std::mem::discriminant(&expected)
}

#[test]
fn sslmode_values_map_one_to_one_without_a_ca() {
    for (query, expected) in [
        ("", PgSslMode::Prefer),
        ("sslmode=disable", PgSslMode::Disable),
        ("sslmode=prefer", PgSslMode::Prefer),
        ("sslmode=require", PgSslMode::Require),
    ] {
        let p = plan(query, &[]).unwrap();
        assert!(is(p.options.get_ssl_mode(), expected), "{query}: {:?}", modes(&p));
        assert!(p.tls_fallback.is_none(), "{query}");
    }
    let err = plan("sslmode=strict", &[]).unwrap_err();
    assert!(err.contains("\"strict\"") && err.contains("verify-full"), "{err}");
}

#[test]
fn verification_needs_a_ca_as_in_libpq() {
    for mode in ["verify-ca", "verify-full"] {
        let err = plan(&format!("sslmode={mode}"), &[]).unwrap_err();
        assert!(
            err.contains(mode) && err.contains("sslrootcert") && err.contains("sslrootcert=system"),
            "{err}"
        );
    }
    let ca = TestCa::new("test CA");
    let root = ca.path().display().to_string();
    for (mode, expected) in [
        ("verify-ca", PgSslMode::VerifyCa),
        ("verify-full", PgSslMode::VerifyFull),
        // With a CA file libpq verifies under require as under verify-ca.
        ("require", PgSslMode::VerifyCa),
        ("prefer", PgSslMode::Prefer),
        ("disable", PgSslMode::Disable),
    ] {
        let p = plan(&format!("sslmode={mode}&sslrootcert={root}"), &[]).unwrap();
        assert!(is(p.options.get_ssl_mode(), expected), "{mode}: {:?}", modes(&p));
    }
}

#[test]
fn allow_tries_plaintext_first_then_tls() {
    let p = plan("sslmode=allow", &[]).unwrap();
    assert_eq!(p.mode, SslMode::Allow);
    let (first, retry) = modes(&p);
    assert!(is(first, PgSslMode::Disable) && is(retry.unwrap(), PgSslMode::Require));
    let ca = TestCa::new("test CA");
    let p = plan(&format!("sslmode=allow&sslrootcert={}", ca.path().display()), &[]).unwrap();
    assert!(is(modes(&p).1.unwrap(), PgSslMode::VerifyCa));
}

#[test]
fn sslrootcert_system_means_public_roots_and_full_verification() {
    let p = plan("sslrootcert=system", &[]).unwrap();
    assert_eq!(p.mode, SslMode::VerifyFull);
    assert!(is(p.options.get_ssl_mode(), PgSslMode::VerifyFull));
    plan("sslrootcert=system&sslmode=verify-full", &[]).unwrap();
    for weak in ["require", "verify-ca", "prefer"] {
        let err = plan(&format!("sslrootcert=system&sslmode={weak}"), &[]).unwrap_err();
        assert!(err.contains("verify-full") && err.contains(weak), "{err}");
    }
}

#[test]
fn the_url_wins_over_the_environment_and_the_environment_over_defaults() {
    let ca = TestCa::new("test CA");
    let root = ca.path().display().to_string();
    let env = [("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", root.as_str())];
    let p = plan("", &env).unwrap();
    assert!(is(p.options.get_ssl_mode(), PgSslMode::VerifyFull));
    let p = plan("sslmode=disable", &env).unwrap();
    assert!(is(p.options.get_ssl_mode(), PgSslMode::Disable));
    // A URL without sslrootcert takes PGSSLROOTCERT: require verifies.
    let p = plan("sslmode=require", &env).unwrap();
    assert!(is(p.options.get_ssl_mode(), PgSslMode::VerifyCa));
}

#[test]
fn the_default_root_file_is_home_postgresql_root_crt() {
    let home = tempfile::tempdir().unwrap();
    let home_str = home.path().display().to_string();
    let env = [("HOME", home_str.as_str())];
    assert!(plan("sslmode=verify-full", &env).is_err(), "no file yet");
    std::fs::create_dir(home.path().join(".postgresql")).unwrap();
    let ca = TestCa::new("test CA");
    std::fs::write(home.path().join(".postgresql/root.crt"), ca.pem()).unwrap();
    let p = plan("sslmode=verify-full", &env).unwrap();
    assert!(is(p.options.get_ssl_mode(), PgSslMode::VerifyFull));
    let p = plan("sslmode=require", &env).unwrap();
    assert!(is(p.options.get_ssl_mode(), PgSslMode::VerifyCa));
}

#[test]
fn a_ca_file_that_is_missing_or_not_pem_is_named() {
    let err = plan("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem", &[]).unwrap_err();
    assert!(
        err.contains("/nonexistent/ca.pem") && err.contains("cannot read"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let err = plan(&format!("sslmode=verify-ca&sslrootcert={}", junk.display()), &[]).unwrap_err();
    assert!(
        err.contains("junk.pem") && err.contains("no PEM certificate"),
        "{err}"
    );
    let err = plan("sslcert=/nonexistent/client.crt", &[]).unwrap_err();
    assert!(err.contains("sslcert /nonexistent/client.crt"), "{err}");
}

#[test]
fn tls_parameters_tally_cannot_honour_are_refused_not_ignored() {
    for query in [
        "sslcrl=/etc/crl.pem",
        "sslcrldir=/etc/crl",
        "sslpassword=x",
        "sslnegotiation=direct",
        "sslcertmode=require",
        "requiressl=1",
        "ssl_min_protocol_version=TLSv1.3",
    ] {
        let key = query.split('=').next().unwrap();
        let err = plan(query, &[]).unwrap_err();
        assert!(
            err.contains(key) && err.contains("not supported"),
            "{query}: {err}"
        );
    }
    for harmless in [
        "sslnegotiation=postgres",
        "sslcertmode=allow",
        "ssl_min_protocol_version=TLSv1.2",
        "application_name=x",
    ] {
        plan(harmless, &[]).unwrap();
    }
}

#[test]
fn a_unix_socket_never_uses_tls() {
    let p = ConnectPlan::resolve("postgres:///tally?host=/run/postgresql&sslmode=require", &|_| {
        None
    })
    .unwrap();
    assert!(is(p.options.get_ssl_mode(), PgSslMode::Disable));
}
