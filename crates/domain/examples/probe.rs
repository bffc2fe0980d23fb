use std::time::Instant;
use tally_domain::appstats::rollup::{DEFAULT_ROLLUP_WINDOW, Rollup};
#[path = "../benches/fleet.rs"]
#[allow(dead_code)]
mod fleet;
fn main() {
    let closed = std::env::args().nth(1).as_deref() == Some("closed");
    let mut f = fleet::Fleet::new();
    let reports: Vec<_> = (0..1_000_000).map(|k| f.ten_windows(k, closed)).collect();
    let mut total = std::time::Duration::ZERO;
    for _ in 0..10 {
        let mut r = Rollup::new(DEFAULT_ROLLUP_WINDOW);
        for x in &reports { r.collect_within(x, usize::MAX); }
        let t = Instant::now();
        let rows = r.rollup(fleet::rollup_now());
        total += t.elapsed();
        std::hint::black_box(rows);
    }
    println!("rollup: {:?}/session", total / 10_000_000);
}
