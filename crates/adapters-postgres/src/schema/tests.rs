use proptest::prelude::*;
use time::macros::datetime;

use super::*;

const AT: OffsetDateTime = datetime!(2026-01-02 03:04:05 UTC);

fn known(version: i64) -> Known {
    Known {
        version,
        description: format!("step {version}"),
        checksum: vec![version as u8; 4],
    }
}

fn recorded(k: &Known) -> Recorded {
    Recorded {
        version: k.version,
        description: k.description.clone(),
        installed_on: AT,
        success: true,
        checksum: k.checksum.clone(),
    }
}

#[test]
fn each_migration_is_classified() {
    let build = [known(1), known(2), known(3), known(4)];
    let mut failed = recorded(&build[1]);
    failed.success = false;
    let mut modified = recorded(&build[2]);
    modified.checksum = vec![0];
    let newer = Recorded {
        version: 9,
        description: "from a newer tally".into(),
        ..recorded(&build[0])
    };
    let status = compare(&build, &[recorded(&build[0]), failed, modified, newer]);
    let states: Vec<(i64, &str)> = status
        .entries
        .iter()
        .map(|e| (e.version, e.state.label()))
        .collect();
    assert_eq!(
        states,
        [
            (1, "applied"),
            (2, "failed"),
            (3, "modified"),
            (4, "pending"),
            (9, "unknown to this tally")
        ]
    );
    assert!(!status.is_current());
    assert_eq!(
        status.summary(),
        "schema not current: 1 pending (0004 step 4), 1 failed (0002 step 2), 1 modified (0003 step 3); \
         1 applied by a newer tally (0009 from a newer tally)"
    );
}

#[test]
fn a_database_never_migrated_has_everything_pending() {
    let status = compare(&[known(1), known(2)], &[]);
    assert!(status.entries.iter().all(|e| e.state == MigrationState::Pending));
    assert_eq!(
        status.summary(),
        "schema not current: 2 pending (0001 step 1, 0002 step 2)"
    );
}

#[test]
fn newer_migrations_leave_the_schema_current() {
    let build = [known(1)];
    let newer = Recorded {
        version: 2,
        ..recorded(&build[0])
    };
    let status = compare(&build, &[recorded(&build[0]), newer]);
    assert!(status.is_current());
    assert_eq!(
        status.summary(),
        "schema current (1 applied; 1 applied by a newer tally (0002 step 1))"
    );
}

#[test]
fn this_builds_migrations_are_listed_in_order() {
    let build = known_migrations();
    assert!(!build.is_empty());
    assert!(build.windows(2).all(|w| w[0].version < w[1].version));
    assert_eq!(build[0].version, 1);
    assert_eq!(build[0].description, "init");
}

proptest! {
    /// Against a plain model: a known version is applied when the history
    /// holds it finished with its checksum, pending when it is absent; every
    /// version of either side is listed once; current means nothing known is
    /// missing, unfinished or changed.
    #[test]
    fn status_matches_a_plain_model(
        known_versions in proptest::collection::btree_set(1i64..40, 0..8),
        history in proptest::collection::btree_map(1i64..40, (any::<bool>(), any::<bool>()), 0..8),
    ) {
        let build: Vec<Known> = known_versions.iter().map(|&v| known(v)).collect();
        let rows: Vec<Recorded> = history
            .iter()
            .map(|(&v, &(success, same_file))| Recorded {
                version: v,
                description: format!("step {v}"),
                installed_on: AT,
                success,
                checksum: if same_file { vec![v as u8; 4] } else { vec![] },
            })
            .collect();
        let status = compare(&build, &rows);

        let all: std::collections::BTreeSet<i64> =
            known_versions.iter().chain(history.keys()).copied().collect();
        let listed: Vec<i64> = status.entries.iter().map(|e| e.version).collect();
        prop_assert_eq!(listed, all.into_iter().collect::<Vec<_>>());
        for e in &status.entries {
            let expected = match (known_versions.contains(&e.version), history.get(&e.version)) {
                (true, None) => "pending",
                (true, Some((false, _))) => "failed",
                (true, Some((true, false))) => "modified",
                (true, Some((true, true))) => "applied",
                (false, Some(_)) => "unknown to this tally",
                (false, None) => unreachable!(),
            };
            prop_assert_eq!(e.state.label(), expected, "version {}", e.version);
        }
        let current = known_versions
            .iter()
            .all(|v| history.get(v) == Some(&(true, true)));
        prop_assert_eq!(status.is_current(), current);
    }
}
