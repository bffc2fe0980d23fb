//! Any bytes as an app stats body: accepted reports keep the domain's rules
//! and survive a JSON round trip; refusals are 4xx naming a field.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tally_fuzz::check_app_stats(data);
});
