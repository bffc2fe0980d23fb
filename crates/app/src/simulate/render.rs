//! The end-of-run report: snapshots, top apps, volumes, throughput, verdict.

use std::fmt::Write as _;

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use time::OffsetDateTime;
use time::macros::format_description;

use super::outcome::{Conservation, Outcome};

/// How many apps the top-apps table shows.
const TOP_APPS: usize = 8;

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn minute(t: OffsetDateTime) -> String {
    t.format(format_description!("[year]-[month]-[day] [hour]:[minute]"))
        .unwrap_or_else(|_| t.to_string())
}

pub fn hhmm(t: OffsetDateTime) -> String {
    t.format(format_description!("[hour]:[minute]"))
        .unwrap_or_else(|_| t.to_string())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for i in 1..header.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

fn pct(part: usize, whole: usize) -> String {
    if whole == 0 {
        return "0%".into();
    }
    format!("{:.0}%", 100.0 * part as f64 / whole as f64)
}

/// The first lines, printed before the run starts.
pub fn header(o: &super::engine::SimConfig, store: &str) -> String {
    let f = &o.fleet;
    format!(
        "tally simulate: {} replicas over {store}; {} workspaces, {} users, {} apps; {} of traffic from {} UTC, seed {}\n",
        f.replicas,
        f.workspaces,
        f.users,
        f.apps,
        humantime::format_duration(o.duration.unsigned_abs()),
        minute(o.start),
        f.seed,
    )
}

pub fn report(o: &Outcome, verdict: &Conservation) -> String {
    let mut out = String::new();
    let [short, medium, long] = o.session_mix;
    let _ = writeln!(
        out,
        "sessions: {} ({} under a minute, {} up to 15 min, {} longer); proxy reports: {}; boundary batches: {}",
        grouped(o.sessions as u64),
        pct(short, o.sessions),
        pct(medium, o.sessions),
        pct(long, o.sessions),
        grouped(o.reports_sent),
        grouped(o.boundary_batches),
    );

    let _ = writeln!(
        out,
        "\nPublished snapshots (one per {} period)",
        humantime::format_duration(o.timeline.period.unsigned_abs())
    );
    let mut snaps = table(&[
        "period (UTC)",
        "unique workspaces",
        "unique users",
        "allowed",
        "denied",
        "replicas",
    ]);
    let mut published = o.published.clone();
    published.sort_by_key(|s| s.period_end);
    for s in &published {
        let u = &s.usage;
        snaps.add_row(vec![
            format!("{} - {}", minute(s.period_start), hhmm(s.period_end)),
            grouped(u.unique_workspaces),
            grouped(u.unique_users),
            grouped(u.allowed_requests),
            grouped(u.denied_requests),
            u.replicas.to_string(),
        ]);
    }
    let _ = writeln!(out, "{snaps}");

    let _ = writeln!(out, "\nTop apps (by unique users, then usage)");
    let mut apps = table(&["app", "users", "sessions", "requests", "usage hours"]);
    for a in o.top_apps.iter().take(TOP_APPS) {
        let label = if a.slug_or_port.is_empty() {
            a.access_method.to_string()
        } else {
            format!("{} ({})", a.slug_or_port, a.access_method)
        };
        apps.add_row(vec![
            label,
            grouped(a.total.unique_users),
            grouped(a.total.sessions),
            grouped(a.total.requests),
            format!("{:.1}", a.total.usage_seconds as f64 / 3_600.0),
        ]);
    }
    let _ = writeln!(out, "{apps}");

    let secs = o.wall.as_secs_f64();
    let _ = writeln!(
        out,
        "\nrows written: {} upserts by the collectors, {} rows in the store",
        grouped(o.rows_reported),
        grouped(o.rows_in_store),
    );
    let _ = writeln!(
        out,
        "last used: set for {} of {} workspaces with sessions",
        grouped(o.last_used.set as u64),
        grouped(o.last_used.expected as u64),
    );
    let _ = writeln!(
        out,
        "wall time: {secs:.2} s for {} simulated; throughput: {} reports/s, {} boundary batches/s",
        humantime::format_duration((o.timeline.end - o.timeline.start).unsigned_abs()),
        grouped((o.reports_sent as f64 / secs.max(1e-9)) as u64),
        grouped((o.boundary_batches as f64 / secs.max(1e-9)) as u64),
    );
    let f = o.faults;
    if f != Default::default() {
        let _ = writeln!(
            out,
            "store faults: {} collector flushes, {} tracker flushes, {} snapshot steps, {} publishes failed; \
             {} unrecovered, {} lost acknowledgements",
            f.collector_flushes, f.tracker_flushes, f.snapshot_steps, f.publishes, f.unrecovered, f.acks_lost
        );
    }
    for (line, problems) in [
        (&verdict.line, &verdict.problems),
        (&o.insights.line, &o.insights.problems),
    ] {
        let _ = writeln!(out, "{line}");
        for p in problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
