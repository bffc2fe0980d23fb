//! Reads a replica's `/metrics` (Prometheus text) into samples.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::common::READER;

/// One sample line: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    /// Each metric family's type (`counter`, `gauge`, `histogram`...), from
    /// its `# TYPE` line.
    pub types: BTreeMap<String, String>,
}

impl Metrics {
    /// Whether a sample named `name` carrying all of `labels` was rendered
    /// (whatever its value).
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
    }

    /// Sum of the samples named `name` carrying all of `labels`; 0 if none
    /// (a counter never incremented is not rendered).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// [`Self::get`] for a counter or a gauge holding a whole number.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let v = self.get(name, labels);
        assert!(
            v >= 0.0 && v.fract() == 0.0,
            "{name}{labels:?} = {v} is not a count"
        );
        v as u64
    }
}

/// Scrapes `GET /metrics` of the replica at `addr` as a reader. A replica
/// always has samples (its process metrics at least): an answer without any
/// fails, saying so, rather than leave a caller to index nothing.
pub async fn scrape(client: &reqwest::Client, addr: SocketAddr) -> Metrics {
    let request = client.get(format!("http://{addr}/metrics")).bearer_auth(READER);
    fetch(request, &format!("GET /metrics on {addr}")).await
}

/// [`scrape`] without a token, for the `--metrics-listen` address at `addr`.
pub async fn scrape_without_token(client: &reqwest::Client, addr: SocketAddr) -> Metrics {
    let request = client.get(format!("http://{addr}/metrics"));
    fetch(request, &format!("GET /metrics on {addr} without a token")).await
}

async fn fetch(request: reqwest::RequestBuilder, what: &str) -> Metrics {
    let response = request.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(response.status(), reqwest::StatusCode::OK, "{what}");
    let text = response.text().await.unwrap();
    let metrics = parse(&text);
    assert!(
        !metrics.samples.is_empty(),
        "{what} answered no samples: {text:?}"
    );
    metrics
}

/// [`scrape`] of every replica, in order.
pub async fn scrape_all(
    client: &reqwest::Client,
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> Vec<Metrics> {
    let mut all = Vec::new();
    for addr in addrs {
        all.push(scrape(client, addr).await);
    }
    all
}

/// [`settled`] of every replica, in order.
pub async fn settle_all(
    client: &reqwest::Client,
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> Vec<Metrics> {
    let mut all = Vec::new();
    for addr in addrs {
        all.push(settled(client, addr).await);
    }
    all
}

/// Scrapes until the replica has written out everything it accepted (no
/// app stat rows waiting or being written, no boundary decisions unflushed),
/// which it does on its own within a few flush intervals.
pub async fn settled(client: &reqwest::Client, addr: SocketAddr) -> Metrics {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mx = scrape(client, addr).await;
        let backlog = mx.count(tally::metrics::BACKLOG_ROWS, &[]);
        let pending = mx.count(tally::metrics::BOUNDARY_PENDING, &[]);
        if backlog == 0 && pending == 0 {
            return mx;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica {addr} still holds {backlog} app stat rows and {pending} boundary decisions unwritten"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Parses the Prometheus text format: the samples and the `# TYPE` lines
/// (other comments skipped).
pub fn parse(text: &str) -> Metrics {
    let lines = || text.lines().map(str::trim).filter(|l| !l.is_empty());
    let samples = lines()
        .filter(|l| !l.starts_with('#'))
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("unparsable metrics line {line:?}")))
        .collect();
    let types = lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut parts = l.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some(name), Some(kind)) => (name.to_owned(), kind.to_owned()),
                _ => panic!("unparsable metrics line {l:?}"),
            }
        })
        .collect();
    Metrics { samples, types }
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        // Label values are quoted and may hold `,` `}` or escaped quotes.
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &inner[i + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    let (_, quote) = chars.next()?;
                    if quote != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        let (_, c) = chars.next()?;
                        match c {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                c => key.push(c),
            }
        }
    }
    // A timestamp may follow the value.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name, labels, value })
}

#[test]
fn parses_labels_with_braces_commas_and_escapes() {
    let m = parse(
        "# HELP x y\n\
         tally_http_requests_total{method=\"GET\",route=\"/a/{id}/b,c\",status=\"200\"} 3\n\
         tally_http_requests_total{method=\"POST\",route=\"q\\\"\",status=\"204\"} 4\n\
         tally_app_stats_backlog_rows 0\n",
    );
    assert_eq!(m.count("tally_http_requests_total", &[]), 7);
    assert_eq!(
        m.count("tally_http_requests_total", &[("route", "/a/{id}/b,c")]),
        3
    );
    assert_eq!(m.count("tally_http_requests_total", &[("route", "q\"")]), 4);
    assert_eq!(m.count("tally_app_stats_backlog_rows", &[]), 0);
    assert_eq!(m.count("absent", &[("a", "b")]), 0);
    assert!(m.has("tally_app_stats_backlog_rows", &[]));
    assert!(m.has("tally_http_requests_total", &[("status", "204")]));
    assert!(!m.has("tally_http_requests_total", &[("status", "500")]));
}

#[test]
fn reads_each_familys_type() {
    let m = parse(
        "# HELP tally_store_up 1 when the store answers.\n\
         # TYPE tally_store_up gauge\n\
         tally_store_up 1\n\
         # TYPE tally_http_requests_total counter\n",
    );
    assert_eq!(m.types["tally_store_up"], "gauge");
    assert_eq!(m.types["tally_http_requests_total"], "counter");
    assert_eq!(m.types.len(), 2);
}
