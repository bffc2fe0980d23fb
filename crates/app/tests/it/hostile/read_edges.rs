//! The valid edges of the insights reads: the longest range taken, every
//! offset, week intervals at their shortest, the limits of `limit`, and the
//! first route's widest range, which reads only what the rollup keeps.

use std::collections::BTreeSet;

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, Time, UtcOffset};

use super::harness::Target;
use super::valid::{apps, get, url_time};

const APP_USAGE: &str = "/api/v2/insights/app-usage";
const ACTIVE_USERS: &str = "/api/v2/insights/active-users";
const USER_ACTIVITY: &str = "/api/v2/insights/user-activity";

/// The last `days` days in `offset`, from midnight `days` days before today
/// to the latest whole hour there that is not in the future.
fn last_days(offset: UtcOffset, days: i64) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    let local = now.to_offset(offset);
    let start = (local.date() - Duration::days(days))
        .midnight()
        .assume_offset(offset);
    let hour_end = now.replace_time(Time::from_hms(now.hour(), 0, 0).unwrap()) + Duration::HOUR;
    let latest = hour_end.to_offset(offset);
    (
        start,
        latest.replace_time(Time::from_hms(latest.hour(), 0, 0).unwrap()),
    )
}

fn range(path: &str, (start, end): (OffsetDateTime, OffsetDateTime), extra: &str) -> String {
    format!(
        "{path}?start_time={}&end_time={}{extra}",
        url_time(start),
        url_time(end)
    )
}

/// `want`: (method, slug, requests) of every accepted app, all of them
/// used within the last hour but one, a backlog of 89 days ago.
pub async fn run(target: &Target, want: &BTreeSet<(String, String, u64)>) {
    // The last 365 days, to the current hour, in the offsets at both ends
    // of the range and in one of 45 minutes: accepted at the default
    // retention, a day each, and every accepted app in them.
    for offset in [(14, 0), (-12, 0), (5, 45), (0, 0)] {
        let offset = UtcOffset::from_hms(offset.0, offset.1, 0).unwrap();
        let year = last_days(offset, 365);
        // A day per interval, the last one cut at the end unless the end is
        // a midnight (in +05:45 the latest valid end can be one).
        let days = (year.1 - year.0).whole_hours().saturating_add(23) / 24;
        // In an offset of 45 minutes the latest whole local hour that is
        // not past the current UTC hour can lie before some of the usage
        // just sent (for up to 45 minutes after each UTC hour's :15).
        let holds_usage = year.1 > OffsetDateTime::now_utc();
        let body = get(target, &range(APP_USAGE, year, "&interval=day")).await;
        assert_eq!(
            body["intervals"].as_array().unwrap().len() as i64,
            days,
            "{offset}"
        );
        assert!((365..=366).contains(&days), "{offset}: {days}");
        if holds_usage {
            assert_eq!(&apps(&body), want, "{offset}: {body}");
        }
        // Each day begins at midnight in the start's offset.
        let first = &body["intervals"][1]["start_time"];
        let first = OffsetDateTime::parse(first.as_str().unwrap(), &Rfc3339).unwrap();
        assert_eq!((first.offset(), first.time()), (offset, Time::MIDNIGHT), "{body}");
        // Past the end, some or none of the usage lies in the range.
        let seen = if holds_usage { 1..=1 } else { 0..=1 };
        let body = get(target, &range(ACTIVE_USERS, year, "")).await;
        let active = body["active_users"].as_u64().unwrap();
        assert!(seen.contains(&active), "{offset}: {body}");
        let body = get(target, &range(USER_ACTIVITY, year, "&limit=1000")).await;
        let users = body["users"].as_array().unwrap().len() as u64;
        assert!(seen.contains(&users), "{offset}: {body}");
    }
    // The longest range, 366 days to today's midnight (the hour's usage
    // lies after it unless it is after midnight already).
    let (_, end) = last_days(UtcOffset::UTC, 0);
    let midnight = end.replace_time(Time::MIDNIGHT);
    let longest = (midnight - Duration::days(366), midnight);
    let body = get(target, &range(ACTIVE_USERS, longest, "&interval=day")).await;
    assert_eq!(body["intervals"].as_array().unwrap().len(), 366, "{body}");
    let body = get(target, &range(USER_ACTIVITY, longest, "&limit=1")).await;
    assert!(body["users"].as_array().unwrap().len() <= 1, "{body}");

    // Week intervals at their shortest: 6 days is one week; 13 is two.
    for (days, weeks) in [(6, 1), (7, 1), (13, 2), (14, 2), (364, 52)] {
        let r = (midnight - Duration::days(days), midnight);
        let body = get(target, &range(APP_USAGE, r, "&interval=week")).await;
        assert_eq!(
            body["intervals"].as_array().unwrap().len(),
            weeks,
            "{days} days: {body}"
        );
    }

    // The first route: its widest range reads what the rollup keeps, so it
    // answers what the retained window does; wholly outside it, nothing.
    let now = OffsetDateTime::now_utc();
    let hour = now.replace_time(Time::from_hms(now.hour(), 0, 0).unwrap());
    let widest = get(
        target,
        "/api/v2/insights/apps?from=0000-01-01T00:00:00Z&to=9999-12-31T23:59:59.999999Z",
    )
    .await;
    assert_eq!(&apps(&widest), want, "{widest}");
    assert_eq!(widest["from"], "0000-01-01T00:00:00Z");
    let kept = format!(
        "/api/v2/insights/apps?from={}&to={}",
        url_time(hour - Duration::days(365)),
        url_time(hour + Duration::HOUR)
    );
    let kept = get(target, &kept).await;
    assert_eq!(kept["apps"], widest["apps"], "{kept}");
    for outside in [
        "from=0001-01-01T00:00:00Z&to=2001-01-01T00:00:00Z".to_owned(),
        format!("from={}&to=9999-12-31T23:59:59Z", url_time(hour + Duration::HOUR)),
        format!(
            "from=0000-01-01T00:00:00Z&to={}",
            url_time(hour - Duration::days(365) - Duration::HOUR)
        ),
    ] {
        let body = get(target, &format!("/api/v2/insights/apps?{outside}")).await;
        assert_eq!(body["apps"], serde_json::json!([]), "{outside}: {body}");
    }
}
