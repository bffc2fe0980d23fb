use super::*;
use time::macros::datetime;

const GO_PAYLOAD_OPEN: &str = r#"{
    "user_id": "8a1b7f1e-0d5e-4d5e-9f3c-1a2b3c4d5e6f",
    "workspace_id": "2c9e3a44-5b6c-4d7e-8f90-a1b2c3d4e5f6",
    "agent_id": "3d0f4b55-6c7d-4e8f-9a01-b2c3d4e5f6a7",
    "access_method": "subdomain",
    "slug_or_port": "code-server",
    "session_id": "4e1a5c66-7d8e-4f9a-8b12-c3d4e5f6a7b8",
    "session_started_at": "2026-11-25T10:15:30.123456789Z",
    "session_ended_at": "0001-01-01T00:00:00Z",
    "requests": 7
}"#;

fn sample() -> StatsReport {
    serde_json::from_str(GO_PAYLOAD_OPEN).unwrap()
}

#[test]
fn decodes_go_payload_with_zero_end_time_as_open() {
    let report = sample();
    assert_eq!(report.access_method, AccessMethod::Subdomain);
    assert_eq!(
        report.session_started_at,
        datetime!(2026-11-25 10:15:30.123456789 UTC)
    );
    assert_eq!(report.session_ended_at, None);
    assert!(report.is_open());
    assert_eq!(report.requests, 7);
}

#[test]
fn encodes_open_session_as_go_zero_time_and_round_trips() {
    let report = sample();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["session_ended_at"], "0001-01-01T00:00:00Z");
    assert_eq!(json["session_started_at"], "2026-11-25T10:15:30.123456789Z");
    let back: StatsReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn missing_or_null_end_time_means_open_and_offsets_are_kept() {
    let mut json: serde_json::Value = serde_json::from_str(GO_PAYLOAD_OPEN).unwrap();
    json.as_object_mut().unwrap().remove("session_ended_at");
    assert_eq!(
        serde_json::from_value::<StatsReport>(json.clone())
            .unwrap()
            .session_ended_at,
        None
    );
    json["session_ended_at"] = serde_json::Value::Null;
    assert_eq!(
        serde_json::from_value::<StatsReport>(json.clone())
            .unwrap()
            .session_ended_at,
        None
    );
    json["session_ended_at"] = "2026-11-25T11:15:30+01:00".into();
    let closed: StatsReport = serde_json::from_value(json).unwrap();
    assert_eq!(closed.session_ended_at, Some(datetime!(2026-11-25 10:15:30 UTC)));
}

#[test]
fn rejects_unknown_access_method_and_bad_timestamps() {
    let mut json: serde_json::Value = serde_json::from_str(GO_PAYLOAD_OPEN).unwrap();
    json["access_method"] = "ssh".into();
    let err = serde_json::from_value::<StatsReport>(json)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ssh"), "{err}");

    let mut json: serde_json::Value = serde_json::from_str(GO_PAYLOAD_OPEN).unwrap();
    json["session_started_at"] = "yesterday".into();
    let err = serde_json::from_value::<StatsReport>(json)
        .unwrap_err()
        .to_string();
    assert!(err.contains("RFC 3339"), "{err}");
}

#[test]
fn validate_names_the_offending_field() {
    let mut report = sample();
    assert_eq!(report.validate(), Ok(()));

    report.session_ended_at = Some(report.session_started_at - time::Duration::SECOND);
    assert_eq!(report.validate().unwrap_err().field, "session_ended_at");

    let mut report = sample();
    report.requests = MAX_REQUESTS_PER_REPORT + 1;
    assert_eq!(report.validate().unwrap_err().field, "requests");

    let mut report = sample();
    report.session_id = Uuid::nil();
    assert_eq!(report.validate().unwrap_err().field, "session_id");

    let mut report = sample();
    report.session_started_at = datetime!(0001-01-01 00:00 UTC);
    assert_eq!(report.validate().unwrap_err().field, "session_started_at");

    let mut report = sample();
    report.slug_or_port = "x".repeat(MAX_SLUG_OR_PORT_LEN + 1);
    assert_eq!(report.validate().unwrap_err().field, "slug_or_port");

    let mut report = sample();
    report.slug_or_port = "code\0server".to_owned();
    assert_eq!(report.validate().unwrap_err().field, "slug_or_port");
    let mut report = sample();
    report.sessions = 0;
    assert_eq!(report.validate().unwrap_err().field, "sessions");
}

#[test]
fn validate_refuses_times_the_collector_cannot_hold() {
    let mut report = sample();
    report.session_ended_at = Some(LATEST_SESSION_TIME);
    assert_eq!(report.validate(), Ok(()));
    report.session_ended_at = Some(LATEST_SESSION_TIME + time::Duration::NANOSECOND);
    assert_eq!(report.validate().unwrap_err().field, "session_ended_at");

    // The same instant written with a far negative offset: its local year is
    // 9999 but it lies past every representable UTC nanosecond.
    let mut report = sample();
    report.session_started_at = datetime!(9999-12-31 23:59:59 -23:59);
    report.session_ended_at = None;
    assert_eq!(report.validate().unwrap_err().field, "session_started_at");
}

#[test]
fn merge_forward_moves_each_column_forward_on_its_own() {
    let at = |m, s| {
        Some(datetime!(2026-11-25 10:00 UTC) + time::Duration::minutes(m) + time::Duration::seconds(s))
    };
    let mut row = sample();
    row.session_ended_at = at(20, 0);
    row.requests = 10;
    let with = |end, requests| StatsReport {
        session_ended_at: end,
        requests,
        ..row.clone()
    };

    let mut stored = row.clone();
    stored.merge_forward(&with(at(19, 0), 20));
    assert_eq!(
        stored,
        with(at(20, 0), 20),
        "an older end with more requests: requests move"
    );
    stored.merge_forward(&with(at(30, 0), 5));
    assert_eq!(
        stored,
        with(at(30, 0), 20),
        "a later end with fewer requests: the end moves"
    );
    stored.merge_forward(&with(None, 25));
    assert_eq!(
        stored,
        with(at(30, 0), 25),
        "an open report never reopens the row"
    );
    stored.merge_forward(&with(at(25, 0), 12));
    assert_eq!(stored, with(at(30, 0), 25), "older and smaller: nothing moves");
    let before = stored.clone();
    stored.merge_forward(&before);
    assert_eq!(stored, before, "a replay changes nothing");

    // Only end and requests are merged; the row keeps its other columns.
    let mut moved = with(at(40, 0), 30);
    moved.slug_or_port = "other".into();
    moved.workspace_id = Uuid::from_u128(9);
    stored.merge_forward(&moved);
    assert_eq!(stored, with(at(40, 0), 30));
}

#[test]
fn a_rolled_up_record_keeps_its_largest_session_count() {
    let mut stored = sample();
    stored.sessions = 4;
    let mut later = stored.clone();
    later.sessions = 6;
    stored.merge_forward(&later);
    assert_eq!(stored.sessions, 6, "more sessions folded in: the count moves");
    let mut older = stored.clone();
    older.sessions = 5;
    stored.merge_forward(&older);
    assert_eq!(stored.sessions, 6, "an older write of the record: it stays");
}

#[test]
fn a_decoded_report_is_one_session_and_the_count_is_not_on_the_wire() {
    assert_eq!(sample().sessions, 1);
    let mut json: serde_json::Value = serde_json::from_str(GO_PAYLOAD_OPEN).unwrap();
    json["sessions"] = 9.into();
    let report: StatsReport = serde_json::from_value(json).unwrap();
    assert_eq!(report.sessions, 1, "a proxy cannot claim more sessions");
    let rolled = StatsReport {
        sessions: 9,
        ..report
    };
    let json = serde_json::to_value(&rolled).unwrap();
    assert!(json.get("sessions").is_none(), "{json}");
}

/// The replica handoff that loses requests under a "not older and not
/// smaller" rule (docs/rules.md#row-merge): replica A reports the open session with its own flush
/// time as provisional end, later than the real close replica B reports
/// with more requests. Either order keeps B's requests and A's later end.
#[test]
fn a_handoff_keeps_the_close_requests_in_either_order() {
    let mut provisional = sample();
    provisional.session_ended_at = Some(datetime!(2026-11-25 10:30 UTC));
    provisional.requests = 3;
    let mut close = sample();
    close.session_ended_at = Some(datetime!(2026-11-25 10:20 UTC));
    close.requests = 8;
    let want = StatsReport {
        requests: 8,
        ..provisional.clone()
    };
    for (first, second) in [(&provisional, &close), (&close, &provisional)] {
        let mut stored = first.clone();
        stored.merge_forward(second);
        assert_eq!(stored, want);
    }
}

mod merge_props {
    use proptest::prelude::*;

    use super::*;

    /// Writes of one row: ends (or open) after a fixed start, any requests
    /// and session counts.
    fn arb_writes(max: usize) -> impl Strategy<Value = Vec<StatsReport>> {
        let write = (prop::option::weighted(0.9, 0i64..1_000), 0u64..1_000, 1u64..50).prop_map(
            |(end_s, requests, sessions)| {
                let mut r = sample();
                r.session_ended_at = end_s.map(|s| r.session_started_at + time::Duration::seconds(s));
                r.requests = requests;
                r.sessions = sessions;
                r
            },
        );
        prop::collection::vec(write, 1..max)
    }

    /// The row the store holds after `writes`: the first inserts it, every
    /// later one is merged in.
    fn fold(writes: &[StatsReport]) -> StatsReport {
        let mut row = writes[0].clone();
        for w in &writes[1..] {
            row.merge_forward(w);
        }
        row
    }

    proptest! {
        /// Any order of the same writes gives the same row: the latest end,
        /// the most requests and the most sessions.
        #[test]
        fn write_order_does_not_matter(
            (writes, shuffled) in arb_writes(10).prop_flat_map(|w| (Just(w.clone()), Just(w).prop_shuffle())),
        ) {
            let row = fold(&writes);
            prop_assert_eq!(&fold(&shuffled), &row);
            prop_assert_eq!(row.requests, writes.iter().map(|w| w.requests).max().unwrap());
            prop_assert_eq!(row.session_ended_at, writes.iter().map(|w| w.session_ended_at).max().unwrap());
            prop_assert_eq!(row.sessions, writes.iter().map(|w| w.sessions).max().unwrap());
        }

        /// Merging is associative: merging pre-merged groups (the reporter's
        /// duplicates in one write) gives the row merging one by one gives.
        #[test]
        fn pre_merged_groups_give_the_same_row(writes in arb_writes(12), cut in any::<prop::sample::Index>()) {
            let (head, tail) = writes.split_at(1 + cut.index(writes.len()));
            let mut row = fold(head);
            if !tail.is_empty() {
                row.merge_forward(&fold(tail));
            }
            prop_assert_eq!(row, fold(&writes));
        }

        /// Replaying any prefix of the writes, after all of them, changes
        /// nothing; along the way neither requests nor the end ever move back.
        #[test]
        fn replays_change_nothing_and_nothing_moves_back(writes in arb_writes(10), prefix in any::<prop::sample::Index>()) {
            let mut row = writes[0].clone();
            for w in &writes[1..] {
                let before = row.clone();
                row.merge_forward(w);
                prop_assert!(row.requests >= before.requests);
                prop_assert!(row.session_ended_at >= before.session_ended_at);
                prop_assert!(row.sessions >= before.sessions);
            }
            let all = row.clone();
            for w in &writes[..=prefix.index(writes.len())] {
                row.merge_forward(w);
            }
            prop_assert_eq!(row, all);
        }

        /// A stored row that ends after it starts keeps doing so (the
        /// store's CHECK): its end only moves forward.
        #[test]
        fn a_valid_row_stays_valid(writes in arb_writes(10)) {
            let mut row = writes[0].clone();
            row.session_ended_at.get_or_insert(row.session_started_at);
            for w in &writes[1..] {
                row.merge_forward(w);
                prop_assert_eq!(row.validate(), Ok(()));
            }
        }
    }
}

#[test]
fn access_method_parses_its_own_names_only() {
    for method in AccessMethod::ALL {
        assert_eq!(method.as_str().parse::<AccessMethod>(), Ok(method));
    }
    assert!("PATH".parse::<AccessMethod>().is_err());
}

proptest::proptest! {
    /// What `validate` accepts the rollup can hold: a valid report is never
    /// dropped for its times, whatever offset it was written in.
    #[test]
    fn valid_reports_are_never_dropped_by_the_rollup(
        start_ns in proptest::prop_oneof![0i128..=86_400_000_000_000, 0i128..=i128::from(i64::MAX)],
        len_ns in proptest::option::of(0i128..=i128::from(i64::MAX)),
        offset_s in -86_399i32..=86_399,
        window_s in 1i64..=86_400,
    ) {
        let offset = time::UtcOffset::from_whole_seconds(offset_s).unwrap();
        let at = |ns: i128| OffsetDateTime::from_unix_timestamp_nanos(ns).unwrap().to_offset(offset);
        let mut report = sample();
        report.session_started_at = at(start_ns);
        report.session_ended_at = len_ns.map(|len| at((start_ns + len).min(i128::from(i64::MAX))));
        proptest::prop_assert_eq!(report.validate(), Ok(()));
        let mut rollup = rollup::Rollup::new(time::Duration::seconds(window_s));
        proptest::prop_assert_ne!(rollup.collect_within(&report, usize::MAX), rollup::Collected::Dropped);
    }

    /// Past the latest time, in any offset, a report is refused by name.
    #[test]
    fn times_past_the_latest_are_refused(
        past_ns in 1i128..=1_000_000_000_000_000_000,
        offset_s in -86_399i32..=86_399,
        end in proptest::bool::ANY,
    ) {
        let offset = time::UtcOffset::from_whole_seconds(offset_s).unwrap();
        let Some(late) = LATEST_SESSION_TIME
            .checked_add(time::Duration::nanoseconds_i128(past_ns))
            .and_then(|t| t.checked_to_offset(offset))
        else {
            return Ok(());
        };
        let mut report = sample();
        let field = if end {
            report.session_ended_at = Some(late);
            "session_ended_at"
        } else {
            report.session_started_at = late;
            report.session_ended_at = None;
            "session_started_at"
        };
        proptest::prop_assert_eq!(report.validate().unwrap_err().field, field);
    }
}
