//! Any bytes as a boundary logs body: accepted batches have real ids and
//! counts within the limit and survive a round trip (as counts and as a list
//! of decisions); refusals are 4xx naming a field.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tally_fuzz::check_boundary_logs(data);
});
