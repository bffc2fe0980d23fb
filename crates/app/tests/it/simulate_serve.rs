//! `tally simulate --serve`: after the run, the API and the dashboard over
//! the simulated data, with the URL and reader token it prints, until SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::tally;

#[tokio::test]
async fn simulate_serve_prints_a_url_and_token_and_serves_the_simulated_days() {
    let mut child = tally()
        .args([
            "simulate",
            "--workspaces",
            "20",
            "--users",
            "10",
            "--apps",
            "4",
            "--duration",
            "26h",
            "--snapshot-interval",
            "6h",
            "--report-interval",
            "5m",
            "--seed",
            "3",
            "--serve",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut url, mut token, mut seen) = (None, None, Vec::new());
    while token.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no URL and token printed:\n{}", seen.join("\n")));
        if let Some(u) = line.strip_prefix("Dashboard: ") {
            url = Some(u.to_owned());
        }
        if let Some(t) = line.strip_prefix("Reader token: ") {
            token = Some(t.to_owned());
        }
        seen.push(line);
    }
    let (url, token) = (url.expect("the URL comes before the token"), token.unwrap());
    // The simulated days are the dashboard's range; the token is not in the URL.
    assert!(url.ends_with("/#start=2026-01-05&end=2026-01-06"), "{url}");
    assert!(!url.contains(&token), "{url}");
    let origin = url.split("/#").next().unwrap().to_owned();

    let client = reqwest::Client::new();
    let page = client.get(format!("{origin}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.unwrap().contains("/dashboard/dashboard.js"));

    let get = |path: &str, token: Option<&str>| {
        let mut request = client.get(format!("{origin}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let refused = get("/api/v2/status", None).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let status: Value = get("/api/v2/status", Some(&token))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["store"], "memory", "{status}");
    assert_eq!(status["store_up"], true, "{status}");

    let usage = get(
        "/api/v2/insights/app-usage?start_time=2026-01-05T00:00:00Z&end_time=2026-01-07T00:00:00Z&interval=day",
        Some(&token),
    )
    .await
    .unwrap();
    assert_eq!(usage.status(), StatusCode::OK);
    let usage: Value = usage.json().await.unwrap();
    assert!(!usage["apps"].as_array().unwrap().is_empty(), "{usage}");
    assert_eq!(usage["intervals"].as_array().unwrap().len(), 2, "{usage}");
    let snapshots: Value = get("/api/v2/telemetry/snapshots", Some(&token))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        snapshots["snapshots"].as_array().unwrap().len() >= 4,
        "{snapshots}"
    );

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shutdown complete"), "{stderr}");
    assert!(stderr.contains("clean=true"), "{stderr}");
    // The exit code is the simulation's verdict, as without --serve.
    let verdict_ok = !seen.iter().any(|l| l.contains("FAILED"));
    assert_eq!(
        out.status.success(),
        verdict_ok,
        "{:?}\n{}",
        out.status,
        seen.join("\n")
    );
}
