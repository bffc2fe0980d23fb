//! Well-formed JSON with chosen field values (valid, at the limits, wrong):
//! the decoder must answer exactly what the model predicts, the same reports
//! or a refusal naming the same field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_fuzz::model::Request;

fuzz_target!(|request: Request| {
    let body = request.to_json();
    let got = tally_fuzz::check_app_stats(body.as_bytes());
    match (request.expected(), got) {
        (Ok(want), Ok(got)) => assert_eq!(got, want, "body: {body}"),
        (Err(want), Err(got)) => assert_eq!(
            got.field.as_deref(),
            Some(want.field()),
            "expected {want:?}, got {got:?}\nbody: {body}"
        ),
        (Ok(want), Err(got)) => panic!("refused, expected {want:?}: {got:?}\nbody: {body}"),
        (Err(want), Ok(got)) => panic!("accepted, expected {want:?}: {got:?}\nbody: {body}"),
    }
});
