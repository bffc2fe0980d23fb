use time::macros::datetime;

use super::*;
use crate::testing::fixtures;

mod props;

const NOW: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);

fn limits() -> SessionTimeLimits {
    SessionTimeLimits {
        clock_skew: Duration::HOUR,
        retention: Duration::days(90),
    }
}

/// A report of one session, started and ended as given.
fn report(start: OffsetDateTime, end: Option<OffsetDateTime>) -> StatsReport {
    fixtures::report(1, start, end, 1)
}

/// The field refused, if any.
fn refused(start: OffsetDateTime, end: Option<OffsetDateTime>) -> Option<&'static str> {
    limits().at(NOW).check(&report(start, end)).err().map(|e| e.field)
}

#[test]
fn the_defaults_are_an_hour_of_skew_and_the_usage_retention() {
    let d = SessionTimeLimits::default();
    assert_eq!(d.clock_skew, Duration::HOUR);
    assert_eq!(d.retention, RetentionPolicy::default().usage);
}

#[test]
fn a_time_exactly_at_the_skew_allowance_is_taken_and_one_second_past_is_not() {
    let edge = NOW + Duration::HOUR;
    assert_eq!(refused(edge, None), None);
    assert_eq!(refused(NOW, Some(edge)), None);
    assert_eq!(refused(edge, Some(edge)), None);
    let past = edge + Duration::SECOND;
    assert_eq!(refused(past, None), Some("session_started_at"));
    assert_eq!(refused(NOW, Some(past)), Some("session_ended_at"));
    assert_eq!(
        refused(edge + Duration::NANOSECOND, None),
        Some("session_started_at")
    );
    // The same instants in another offset.
    let east = time::UtcOffset::from_hms(14, 0, 0).unwrap();
    assert_eq!(refused(edge.to_offset(east), None), None);
    assert_eq!(refused(past.to_offset(east), None), Some("session_started_at"));
}

#[test]
fn a_start_exactly_at_the_retention_is_taken_and_one_second_older_is_not() {
    let edge = NOW - Duration::days(90);
    assert_eq!(refused(edge, None), None);
    assert_eq!(refused(edge, Some(NOW)), None);
    let older = edge - Duration::SECOND;
    assert_eq!(refused(older, None), Some("session_started_at"));
    // Its end does not save it: nothing that old is kept.
    assert_eq!(refused(older, Some(NOW)), Some("session_started_at"));
    assert_eq!(
        refused(edge - Duration::NANOSECOND, Some(edge)),
        Some("session_started_at")
    );
}

#[test]
fn an_outage_backlog_within_the_retention_is_taken() {
    // A proxy that kept a week of sessions while the server was away, one
    // of them still open after 89 days.
    for age in [Duration::days(7), Duration::days(89)] {
        let start = NOW - age;
        assert_eq!(refused(start, Some(start + Duration::minutes(5))), None);
        assert_eq!(refused(start, None), None);
    }
}

#[test]
fn absurd_times_are_refused_naming_the_field_and_saying_why() {
    let err = limits()
        .at(NOW)
        .check(&report(
            datetime!(1970-01-01 00:00 UTC),
            Some(datetime!(2262-04-11 23:47:16 UTC)),
        ))
        .unwrap_err();
    assert_eq!(err.field, "session_started_at");
    assert!(err.reason.contains("2026-08-27T12:00:00Z"), "{err}");
    assert!(err.reason.contains("90d"), "{err}");

    let err = limits()
        .at(NOW)
        .check(&report(NOW, Some(datetime!(2262-04-11 23:47:16 UTC))))
        .unwrap_err();
    assert_eq!(err.field, "session_ended_at");
    assert!(err.reason.contains("2026-11-25T13:00:00Z"), "{err}");
    assert!(err.reason.contains("1h"), "{err}");
}

#[test]
fn the_window_saturates_at_the_ends_of_time() {
    let huge = SessionTimeLimits {
        clock_skew: Duration::MAX,
        retention: Duration::MAX,
    };
    let w = huge.at(NOW);
    assert_eq!(w.earliest_start, time::PrimitiveDateTime::MIN.assume_utc());
    assert_eq!(w.latest, time::PrimitiveDateTime::MAX.assume_utc());
    assert!(w.check(&report(datetime!(1970-01-01 00:00 UTC), None)).is_ok());
}
