use std::time::Instant;
use tally_domain::appstats::rollup::{DEFAULT_ROLLUP_WINDOW, Rollup};
use time::Duration;
#[path = "../benches/fleet.rs"]
#[allow(dead_code)]
mod fleet;
fn main() {
    let what = std::env::args().nth(1).unwrap_or_default();
    let mut f = fleet::Fleet::new();
    if what == "apply" {
        let reports = f.one_window(1_000_000, Some(Duration::seconds(10)));
        let mut total = std::time::Duration::ZERO;
        for _ in 0..5 {
            let mut r = Rollup::new(DEFAULT_ROLLUP_WINDOW);
            let t = Instant::now();
            r.collect_batch(&reports, usize::MAX);
            total += t.elapsed();
        }
        println!("apply batch: {:?}/report", total / 5_000_000);
        return;
    }
    let closed = what == "closed";
    let reports: Vec<_> = (0..1_000_000).map(|k| f.ten_windows(k, closed)).collect();
    let mut total = std::time::Duration::ZERO;
    for _ in 0..5 {
        let mut r = Rollup::new(DEFAULT_ROLLUP_WINDOW);
        r.collect_batch(&reports, usize::MAX);
        let t = Instant::now();
        let rows = r.rollup(fleet::rollup_now());
        total += t.elapsed();
        std::hint::black_box(rows);
    }
    println!("rollup: {:?}/session", total / 5_000_000);
}
