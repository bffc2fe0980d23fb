//! Structured boundary logs requests for the `boundary_logs_structured`
//! target: counts, a list of decisions, both or neither, and what the decoder
//! must answer, predicted independently of it.

use crate::model::{Count, Id, quote};
use arbitrary::Arbitrary;
use tally::http::ingest::BoundaryBatch;

const MAX_COUNT: u64 = u32::MAX as u64;

#[derive(Debug, Arbitrary)]
pub struct Request {
    pub workspace_id: Option<Id>,
    pub owner_id: Option<Id>,
    pub allowed: Option<Count>,
    pub denied: Option<Count>,
    pub logs: Logs,
    /// Unknown fields an agent may send, which must be ignored.
    pub extra: bool,
}

#[derive(Debug, Arbitrary)]
pub enum Logs {
    Missing,
    Null,
    List(Vec<Log>),
}

#[derive(Debug, Arbitrary)]
pub struct Log {
    pub decision: Option<Decision>,
    pub extra: bool,
}

#[derive(Debug, Arbitrary)]
pub enum Decision {
    /// "allow", "deny" and the aliases "allowed", "denied".
    Known(u8),
    Text(String),
    Number(u8),
}

/// The field the decoder must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

const KNOWN: [(&str, bool); 4] = [
    ("allow", true),
    ("deny", false),
    ("allowed", true),
    ("denied", false),
];

impl Request {
    /// The body, fields in declaration order (so the first error is known).
    pub fn to_json(&self) -> String {
        let mut fields: Vec<String> = Vec::new();
        let mut put = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                fields.push(format!("\"{name}\":{v}"));
            }
        };
        put("workspace_id", self.workspace_id.as_ref().map(Id::json));
        put("owner_id", self.owner_id.as_ref().map(Id::json));
        put("allowed", self.allowed.as_ref().map(Count::json));
        put("denied", self.denied.as_ref().map(Count::json));
        put(
            "logs",
            match &self.logs {
                Logs::Missing => None,
                Logs::Null => Some("null".into()),
                Logs::List(logs) => {
                    let items: Vec<String> = logs.iter().map(Log::json).collect();
                    Some(format!("[{}]", items.join(",")))
                }
            },
        );
        if self.extra {
            put("agent_version", Some("\"v2.99.0\"".into()));
        }
        format!("{{{}}}", fields.join(","))
    }

    pub fn expected(&self) -> Result<BoundaryBatch, Refusal> {
        let refuse = |f: &str| Refusal(f.to_owned());
        // Decoding: the first wrong field in the body, then the first missing.
        let workspace_id = (self.workspace_id.as_ref())
            .map(|v| v.parse().ok_or_else(|| refuse("workspace_id")))
            .transpose()?;
        let owner_id = (self.owner_id.as_ref())
            .map(|v| v.parse().ok_or_else(|| refuse("owner_id")))
            .transpose()?;
        let allowed = count(self.allowed.as_ref()).map_err(|()| refuse("allowed"))?;
        let denied = count(self.denied.as_ref()).map_err(|()| refuse("denied"))?;
        let logs = match &self.logs {
            Logs::Missing | Logs::Null => None,
            Logs::List(logs) => {
                let mut decisions = Vec::with_capacity(logs.len());
                for (i, log) in logs.iter().enumerate() {
                    let allow = log
                        .allows()
                        .map_err(|()| Refusal(format!("logs[{i}].decision")))?;
                    decisions.push(allow);
                }
                Some(decisions)
            }
        };
        let workspace_id = workspace_id.ok_or_else(|| refuse("workspace_id"))?;
        let owner_id = owner_id.ok_or_else(|| refuse("owner_id"))?;
        // Rules.
        if workspace_id.is_nil() {
            return Err(refuse("workspace_id"));
        }
        if owner_id.is_nil() {
            return Err(refuse("owner_id"));
        }
        let (allowed, denied) = match (logs, allowed, denied) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => return Err(refuse("logs")),
            (Some(d), None, None) => {
                let a = d.iter().filter(|a| **a).count() as u64;
                (a, d.len() as u64 - a)
            }
            (None, None, None) => return Err(refuse("allowed")),
            (None, a, d) => (a.unwrap_or(0), d.unwrap_or(0)),
        };
        if allowed > MAX_COUNT {
            return Err(refuse("allowed"));
        }
        if denied > MAX_COUNT {
            return Err(refuse("denied"));
        }
        Ok(BoundaryBatch {
            workspace_id,
            owner_id,
            allowed,
            denied,
        })
    }
}

/// An optional count: absent and `null` are `None`.
fn count(c: Option<&Count>) -> Result<Option<u64>, ()> {
    match c {
        None | Some(Count::Null) => Ok(None),
        Some(c) => c.parse().map(Some).ok_or(()),
    }
}

impl Log {
    fn json(&self) -> String {
        let mut fields = Vec::new();
        if let Some(d) = &self.decision {
            let v = match d {
                Decision::Known(i) => quote(KNOWN[*i as usize % 4].0),
                Decision::Text(s) => quote(s),
                Decision::Number(n) => n.to_string(),
            };
            fields.push(format!("\"decision\":{v}"));
        }
        if self.extra {
            fields.push("\"http_url\":\"https://example.com/\"".into());
        }
        format!("{{{}}}", fields.join(","))
    }

    /// Whether it allows; `Err` if the decision is missing or unknown.
    fn allows(&self) -> Result<bool, ()> {
        match &self.decision {
            Some(Decision::Known(i)) => Ok(KNOWN[*i as usize % 4].1),
            Some(Decision::Text(s)) => KNOWN.iter().find(|(k, _)| k == s).map(|(_, a)| *a).ok_or(()),
            Some(Decision::Number(_)) | None => Err(()),
        }
    }
}
