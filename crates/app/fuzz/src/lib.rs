//! Properties the payload decoders must hold for any input, shared by the
//! fuzz targets in `fuzz_targets/`. A broken property panics, which libFuzzer
//! reports as a crash with the input saved under `artifacts/`.

pub mod boundary_model;
pub mod model;

use tally::http::error::ApiError;
use tally::http::ingest::{BoundaryBatch, decode_app_stats, decode_boundary_logs};
use tally_domain::appstats::StatsReport;
use tally_domain::appstats::session_times::{SessionTimeLimits, SessionWindow};
use tally_domain::appstats::{MAX_REQUESTS_PER_REPORT, MAX_SLUG_OR_PORT_LEN};
use time::OffsetDateTime;

/// The server's clock in the targets, 2027-01-01T00:00:00Z: every seed's
/// session lies within the default limits around it.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_798_761_600).expect("a valid time")
}

/// The session times the decoder takes in the targets: the server's
/// defaults at [`now`].
pub fn window() -> SessionWindow {
    SessionTimeLimits::default().at(now())
}

/// Decodes app stats and checks what holds for any outcome.
pub fn check_app_stats(data: &[u8]) -> Result<Vec<StatsReport>, ApiError> {
    let result = decode_app_stats(data, &window());
    match &result {
        Ok(reports) => {
            assert_json_object(data);
            for (i, r) in reports.iter().enumerate() {
                assert_report_invariants(i, r);
            }
            assert_app_stats_round_trip(reports);
        }
        Err(e) => assert_client_error(data, e),
    }
    result
}

/// What every accepted report satisfies: the domain's own validation and,
/// spelled out, the rules the store relies on.
pub fn assert_report_invariants(i: usize, r: &StatsReport) {
    if let Err(e) = r.validate() {
        panic!("accepted report {i} fails validation ({e}): {r:?}");
    }
    let w = window();
    assert!(
        r.session_started_at >= w.earliest_start && r.session_started_at <= w.latest,
        "report {i}: a start outside {w:?} accepted: {r:?}"
    );
    assert!(
        r.session_ended_at.is_none_or(|end| end <= w.latest),
        "report {i}: an end past {} accepted: {r:?}",
        w.latest
    );
    assert!(!r.session_id.is_nil(), "report {i}: nil session id accepted");
    assert!(
        r.session_started_at.year() >= 1970,
        "report {i}: unset start accepted: {r:?}"
    );
    if let Some(end) = r.session_ended_at {
        assert!(
            end >= r.session_started_at,
            "report {i}: ends before it starts: {r:?}"
        );
    }
    assert!(
        r.requests <= MAX_REQUESTS_PER_REPORT,
        "report {i}: {} requests accepted",
        r.requests
    );
    assert!(
        r.slug_or_port.len() <= MAX_SLUG_OR_PORT_LEN,
        "report {i}: slug of {} bytes accepted",
        r.slug_or_port.len()
    );
}

/// Re-encoding accepted reports as the Go proxy would and decoding them again
/// gives the same reports: nothing is lost or changed on the way in.
fn assert_app_stats_round_trip(reports: &[StatsReport]) {
    let body =
        serde_json::to_vec(&serde_json::json!({ "stats": reports })).expect("accepted reports serialize");
    match decode_app_stats(&body, &window()) {
        Ok(again) => assert_eq!(again, reports, "round trip changed the reports"),
        Err(e) => panic!(
            "re-encoded reports refused: {e:?}\nbody: {}",
            String::from_utf8_lossy(&body)
        ),
    }
}

/// Decodes boundary logs and checks what holds for any outcome.
pub fn check_boundary_logs(data: &[u8]) -> Result<BoundaryBatch, ApiError> {
    let result = decode_boundary_logs(data);
    match &result {
        Ok(b) => {
            assert_json_object(data);
            assert!(!b.workspace_id.is_nil(), "nil workspace id accepted");
            assert!(!b.owner_id.is_nil(), "nil owner id accepted");
            assert!(
                b.allowed <= MAX_REQUESTS_PER_REPORT,
                "allowed {} accepted",
                b.allowed
            );
            assert!(
                b.denied <= MAX_REQUESTS_PER_REPORT,
                "denied {} accepted",
                b.denied
            );
            assert_boundary_round_trip(b);
        }
        Err(e) => assert_client_error(data, e),
    }
    result
}

/// The batch re-encoded as counts, and (when small) as a list of decisions,
/// decodes to the same batch.
fn assert_boundary_round_trip(b: &BoundaryBatch) {
    let counts = serde_json::json!({
        "workspace_id": b.workspace_id,
        "owner_id": b.owner_id,
        "allowed": b.allowed,
        "denied": b.denied,
    });
    let again = decode_boundary_logs(&serde_json::to_vec(&counts).unwrap());
    assert_eq!(again.as_ref(), Ok(b), "counts round trip of {counts}");
    if b.allowed + b.denied <= 256 {
        let logs: Vec<_> = std::iter::repeat_n("allow", b.allowed as usize)
            .chain(std::iter::repeat_n("deny", b.denied as usize))
            .map(|d| serde_json::json!({ "decision": d }))
            .collect();
        let as_logs = serde_json::json!({
            "workspace_id": b.workspace_id,
            "owner_id": b.owner_id,
            "logs": logs,
        });
        let again = decode_boundary_logs(&serde_json::to_vec(&as_logs).unwrap());
        assert_eq!(again.as_ref(), Ok(b), "logs round trip of {as_logs}");
    }
}

/// Only a JSON object (RFC 8259: UTF-8 text) is ever accepted.
fn assert_json_object(data: &[u8]) {
    if let Err(e) = std::str::from_utf8(data) {
        panic!("accepted a body that is not UTF-8 ({e})");
    }
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(serde_json::Value::Object(_)) => {}
        // RFC 8259 lets a parser limit numbers; an ignored field may hold one
        // no f64 can (`-28E443`), which `Value` refuses. The structure is
        // still checked.
        Err(e) if e.to_string().starts_with("number out of range") && is_structurally_object(data) => {}
        other => panic!("accepted a body that is not a JSON object: {other:?}"),
    }
}

/// JSON structure only: serde_json does not check strings it skips.
fn is_structurally_object(data: &[u8]) -> bool {
    struct IsMap;
    impl<'de> serde::de::Visitor<'de> for IsMap {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(data);
    serde::Deserializer::deserialize_map(&mut de, IsMap).is_ok() && de.end().is_ok()
}

/// A refusal is the client's fault (4xx), says why, and names a field or a
/// position in the body.
pub fn assert_client_error(data: &[u8], e: &ApiError) {
    let body = String::from_utf8_lossy(data);
    assert!(
        e.status.is_client_error(),
        "refusal with status {}: {e:?}\nbody: {body}",
        e.status
    );
    assert!(
        !e.message.trim().is_empty(),
        "refusal without a message: {e:?}\nbody: {body}"
    );
    // A field may be an unknown key, even " ": it still says where.
    match e.field.as_deref() {
        Some(f) if !f.is_empty() => {}
        _ => panic!("refusal naming no field: {e:?}\nbody: {body}"),
    }
}
