use tally_domain::appstats::AccessMethod;
use tally_domain::ports::{AppStatsStore, AppStatsWrite, AppUsage, InsightsStore, TimeRange};
use time::Duration;

use super::{T0, fixture, id, session};

#[tokio::test]
async fn app_usage_counts_overlapping_sessions_clipped_to_the_range() {
    let f = fixture().await;
    let s = &f.store;
    let mut rows = vec![
        session(id(1), id(10), "code", 0, 600, 5),      // [0, 600]
        session(id(1), id(10), "code", 100, 100, 1),    // same user again
        session(id(2), id(11), "code", -300, 400, 2),   // starts before the range
        session(id(3), id(12), "jupyter", 500, 900, 7), // ends after the range
        session(id(4), id(13), "late", 1000, 10, 9),    // starts at `to`: out
        session(id(5), id(14), "early", -100, 100, 9),  // ends at `from`: in, 0 s
    ];
    rows[3].access_method = AccessMethod::Subdomain;
    s.write_app_stats(&AppStatsWrite {
        rows,
        batch_size: 2,
        last_used: vec![],
    })
    .await
    .unwrap();
    let range = TimeRange::new(T0, T0 + Duration::seconds(1000)).unwrap();
    let usage = s.app_usage(range).await.unwrap();
    let secs = |n: u64| n * 1_000_000;
    assert_eq!(
        usage,
        vec![
            AppUsage {
                access_method: AccessMethod::Path,
                slug_or_port: "code".into(),
                unique_users: 2,
                sessions: 3,
                requests: 8,
                session_micros: secs(600 + 100 + 100),
            },
            AppUsage {
                access_method: AccessMethod::Subdomain,
                slug_or_port: "jupyter".into(),
                unique_users: 1,
                sessions: 1,
                requests: 7,
                session_micros: secs(500),
            },
            AppUsage {
                access_method: AccessMethod::Path,
                slug_or_port: "early".into(),
                unique_users: 1,
                sessions: 1,
                requests: 9,
                session_micros: 0,
            },
        ]
    );

    let stats = s.app_stats(range, 10).await.unwrap();
    let starts: Vec<_> = stats.iter().map(|r| r.session_started_at - T0).collect();
    assert_eq!(
        starts,
        [-300, -100, 0, 100, 500].map(Duration::seconds).to_vec(),
        "oldest start first, `to` excluded"
    );
    assert_eq!(s.app_stats(range, 2).await.unwrap(), stats[..2].to_vec());
    assert!(s.workspace_last_used(id(999)).await.unwrap().is_none());
}
