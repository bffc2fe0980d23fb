//! Structured app stats requests for the `app_stats_structured` target: the
//! fuzzer picks field values (valid, edge and wrong), this module writes them
//! as the Go proxy would and predicts, independently of the decoder, what it
//! must answer: the exact reports, or the exact field it must name.

use arbitrary::Arbitrary;
use std::fmt::Write as _;
use tally_domain::appstats::{AccessMethod, StatsReport};
use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, UtcOffset};
use uuid::Uuid;

const MAX_REQUESTS: u64 = u32::MAX as u64;
const MAX_SLUG: usize = 1024;

#[derive(Debug, Arbitrary)]
pub struct Request {
    pub stats: Stats,
    /// An unknown top-level field, which must be ignored.
    pub extra: bool,
}

#[derive(Debug, Arbitrary)]
pub enum Stats {
    List(Vec<Report>),
    /// Go encodes a nil slice as `null`: no reports.
    Null,
    Missing,
}

/// One report; `None` leaves the field out.
#[derive(Debug, Arbitrary)]
pub struct Report {
    pub user_id: Option<Id>,
    pub workspace_id: Option<Id>,
    pub agent_id: Option<Id>,
    pub access_method: Option<Method>,
    pub slug_or_port: Option<Slug>,
    pub session_id: Option<Id>,
    pub session_started_at: Option<Stamp>,
    pub session_ended_at: End,
    pub requests: Option<Count>,
    /// An unknown field, as a newer proxy may send.
    pub extra: bool,
}

#[derive(Debug, Arbitrary)]
pub enum Id {
    Nil,
    /// Written hyphenated, simple, braced or as a URN, any case: all valid.
    Bytes([u8; 16], u8),
    Text(String),
}

#[derive(Debug, Arbitrary)]
pub enum Method {
    Known(u8),
    Text(String),
}

#[derive(Debug, Arbitrary)]
pub enum Slug {
    Text(String),
    /// 1000..=1049 characters of one or two bytes each, around the limit.
    Long(u8, bool),
}

#[derive(Debug, Arbitrary)]
pub enum Stamp {
    /// RFC 3339 from parts; an impossible day makes it invalid.
    Parts(Parts),
    /// Go's zero time (as a start: unset), in some offset.
    GoZero(i8),
    Text(String),
    Number(i64),
    Null,
    /// Within 200 days of the server's clock either way, to the second.
    Near(i32),
    /// At, or a nanosecond or a second past, an edge of the times the
    /// server takes, in some offset.
    Edge(u8),
}

#[derive(Debug, Arbitrary)]
pub struct Parts {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    nanos: u32,
    digits: u8,
    offset_minutes: i16,
}

#[derive(Debug, Arbitrary)]
pub enum End {
    Missing,
    Null,
    Stamp(Stamp),
}

#[derive(Debug, Arbitrary)]
pub enum Count {
    Small(u16),
    Any(u64),
    /// The largest accepted count, or one more.
    Edge(bool),
    Negative(i64),
    Float(f64),
    Text(u32),
    Null,
}

/// Why the request must be refused: a JSON error (wrong type or missing
/// field, caught while decoding, so the first in the body wins) or a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Decode(String),
    Rule(String),
}

impl Refusal {
    pub fn field(&self) -> &str {
        match self {
            Refusal::Decode(f) | Refusal::Rule(f) => f,
        }
    }
}

impl Request {
    /// The body, fields in declaration order (so the first error is known).
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        match &self.stats {
            Stats::List(reports) => {
                out.push_str("\"stats\":[");
                for (i, r) in reports.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    r.write_json(&mut out);
                }
                out.push(']');
            }
            Stats::Null => out.push_str("\"stats\":null"),
            Stats::Missing => {}
        }
        if self.extra {
            if !matches!(self.stats, Stats::Missing) {
                out.push(',');
            }
            out.push_str("\"proxy_version\":{\"v\":[1,2,\"x\"]}");
        }
        out.push('}');
        out
    }

    /// What the decoder must answer.
    pub fn expected(&self) -> Result<Vec<StatsReport>, Refusal> {
        let reports = match &self.stats {
            Stats::List(reports) => reports,
            Stats::Null => return Ok(Vec::new()),
            Stats::Missing => return Err(Refusal::Decode("stats".into())),
        };
        let mut parsed = Vec::with_capacity(reports.len());
        for (i, r) in reports.iter().enumerate() {
            parsed.push(
                r.parse()
                    .map_err(|f| Refusal::Decode(format!("stats[{i}].{f}")))?,
            );
        }
        for (i, r) in parsed.iter().enumerate() {
            if let Some(f) = rule_broken(r).or_else(|| time_rule_broken(r)) {
                return Err(Refusal::Rule(format!("stats[{i}].{f}")));
            }
        }
        Ok(parsed)
    }
}

/// The server's default limits around its clock ([`crate::now`]): a start
/// at most 365 days old (the usage retention), nothing more than an hour ahead.
fn taken() -> (OffsetDateTime, OffsetDateTime) {
    let now = crate::now();
    (now - Duration::days(365), now + Duration::hours(1))
}

/// The session time rules, checked after the others: the start within the
/// times taken, then the end not past them.
fn time_rule_broken(r: &StatsReport) -> Option<&'static str> {
    let (earliest, latest) = taken();
    if r.session_started_at < earliest || r.session_started_at > latest {
        Some("session_started_at")
    } else if r.session_ended_at.is_some_and(|end| end > latest) {
        Some("session_ended_at")
    } else {
        None
    }
}

/// The latest session time the collector can hold (nanoseconds in an i64).
fn latest() -> OffsetDateTime {
    tally_domain::appstats::LATEST_SESSION_TIME
}

/// The domain's rules, written out again, in `validate`'s order.
fn rule_broken(r: &StatsReport) -> Option<&'static str> {
    if r.session_id.is_nil() {
        Some("session_id")
    } else if r.session_started_at < OffsetDateTime::UNIX_EPOCH || r.session_started_at > latest() {
        Some("session_started_at")
    } else if r
        .session_ended_at
        .is_some_and(|end| end > latest() || end < r.session_started_at)
    {
        Some("session_ended_at")
    } else if r.slug_or_port.len() > MAX_SLUG || r.slug_or_port.contains('\0') {
        Some("slug_or_port")
    } else if r.requests > MAX_REQUESTS {
        Some("requests")
    } else {
        None
    }
}

impl Report {
    fn write_json(&self, out: &mut String) {
        let mut fields: Vec<(&str, String)> = Vec::new();
        let mut put = |name, value: Option<String>| {
            if let Some(v) = value {
                fields.push((name, v));
            }
        };
        put("user_id", self.user_id.as_ref().map(Id::json));
        put("workspace_id", self.workspace_id.as_ref().map(Id::json));
        put("agent_id", self.agent_id.as_ref().map(Id::json));
        put("access_method", self.access_method.as_ref().map(Method::json));
        put(
            "slug_or_port",
            self.slug_or_port.as_ref().map(|s| quote(&s.text())),
        );
        put("session_id", self.session_id.as_ref().map(Id::json));
        put(
            "session_started_at",
            self.session_started_at.as_ref().map(Stamp::json),
        );
        put(
            "session_ended_at",
            match &self.session_ended_at {
                End::Missing => None,
                End::Null => Some("null".into()),
                End::Stamp(s) => Some(s.json()),
            },
        );
        put("requests", self.requests.as_ref().map(Count::json));
        if self.extra {
            fields.push(("proxy_region", "\"eu-west\"".into()));
        }
        out.push('{');
        for (i, (name, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{name}\":{value}");
        }
        out.push('}');
    }

    /// The report, or the field serde must name: the first wrong field in
    /// the body, else the first missing one in declaration order.
    fn parse(&self) -> Result<StatsReport, &'static str> {
        let user_id = self
            .user_id
            .as_ref()
            .map(|v| v.parse().ok_or("user_id"))
            .transpose()?;
        let workspace_id = (self.workspace_id.as_ref())
            .map(|v| v.parse().ok_or("workspace_id"))
            .transpose()?;
        let agent_id = self
            .agent_id
            .as_ref()
            .map(|v| v.parse().ok_or("agent_id"))
            .transpose()?;
        let access_method = (self.access_method.as_ref())
            .map(|v| v.parse().ok_or("access_method"))
            .transpose()?;
        let slug_or_port = self.slug_or_port.as_ref().map(Slug::text);
        let session_id = (self.session_id.as_ref())
            .map(|v| v.parse().ok_or("session_id"))
            .transpose()?;
        let session_started_at = (self.session_started_at.as_ref())
            .map(|v| v.parse().ok_or("session_started_at"))
            .transpose()?;
        let session_ended_at = match &self.session_ended_at {
            End::Missing | End::Null => None,
            End::Stamp(Stamp::Null) => None,
            End::Stamp(s) => {
                let t = s.parse().ok_or("session_ended_at")?;
                // Go's zero time, in any offset, is an open session.
                (t != go_zero()).then_some(t)
            }
        };
        let requests = self
            .requests
            .as_ref()
            .map(|v| v.parse().ok_or("requests"))
            .transpose()?;
        Ok(StatsReport {
            user_id: user_id.ok_or("user_id")?,
            workspace_id: workspace_id.ok_or("workspace_id")?,
            agent_id: agent_id.ok_or("agent_id")?,
            access_method: access_method.ok_or("access_method")?,
            slug_or_port: slug_or_port.ok_or("slug_or_port")?,
            session_id: session_id.ok_or("session_id")?,
            session_started_at: session_started_at.ok_or("session_started_at")?,
            session_ended_at,
            requests: requests.ok_or("requests")?,
            // Not on the wire: every report is one session.
            sessions: 1,
        })
    }
}

pub(crate) fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn go_zero() -> OffsetDateTime {
    PrimitiveDateTime::new(
        Date::from_calendar_date(1, Month::January, 1).unwrap(),
        time::Time::MIDNIGHT,
    )
    .assume_utc()
}

impl Id {
    pub(crate) fn json(&self) -> String {
        match self {
            Id::Nil => quote(&Uuid::nil().to_string()),
            Id::Bytes(b, style) => {
                let u = Uuid::from_bytes(*b);
                let text = match style % 4 {
                    0 => u.hyphenated().to_string(),
                    1 => u.simple().to_string(),
                    2 => u.braced().to_string(),
                    _ => u.urn().to_string(),
                };
                quote(&if style & 4 != 0 { text.to_uppercase() } else { text })
            }
            Id::Text(s) => quote(s),
        }
    }

    pub(crate) fn parse(&self) -> Option<Uuid> {
        match self {
            Id::Nil => Some(Uuid::nil()),
            Id::Bytes(b, _) => Some(Uuid::from_bytes(*b)),
            // The fuzzer's strings: whatever the uuid crate makes of them.
            Id::Text(s) => Uuid::try_parse(s).ok(),
        }
    }
}

impl Method {
    fn json(&self) -> String {
        match self {
            Method::Known(i) => quote(AccessMethod::ALL[*i as usize % 3].as_str()),
            Method::Text(s) => quote(s),
        }
    }

    fn parse(&self) -> Option<AccessMethod> {
        match self {
            Method::Known(i) => Some(AccessMethod::ALL[*i as usize % 3]),
            // Exact lowercase names only.
            Method::Text(s) => AccessMethod::ALL.into_iter().find(|m| m.as_str() == s),
        }
    }
}

impl Slug {
    fn text(&self) -> String {
        match self {
            Slug::Text(s) => s.clone(),
            Slug::Long(n, wide) => (if *wide { "é" } else { "a" }).repeat(1000 + *n as usize % 50),
        }
    }
}

impl Stamp {
    fn json(&self) -> String {
        match self {
            Stamp::Near(_) | Stamp::Edge(_) => {
                let t = self.parse().expect("a time near the clock");
                quote(&t.format(&time::format_description::well_known::Rfc3339).unwrap())
            }
            Stamp::Parts(p) => quote(&p.text()),
            Stamp::GoZero(hours) => {
                let offset = UtcOffset::from_hms(hours % 24, 0, 0).unwrap();
                let t = go_zero().to_offset(offset);
                quote(&t.format(&time::format_description::well_known::Rfc3339).unwrap())
            }
            Stamp::Text(s) => quote(s),
            Stamp::Number(n) => n.to_string(),
            Stamp::Null => "null".into(),
        }
    }

    fn parse(&self) -> Option<OffsetDateTime> {
        match self {
            Stamp::Near(n) => {
                const SPAN: i64 = 200 * 86_400;
                Some(crate::now() + Duration::seconds(i64::from(*n).rem_euclid(2 * SPAN) - SPAN))
            }
            Stamp::Edge(n) => {
                let (earliest, latest) = taken();
                let t = [
                    earliest - Duration::SECOND,
                    earliest - Duration::NANOSECOND,
                    earliest,
                    earliest + Duration::NANOSECOND,
                    latest - Duration::NANOSECOND,
                    latest,
                    latest + Duration::NANOSECOND,
                    latest + Duration::SECOND,
                ][usize::from(n % 8)];
                let hours = i8::try_from(n / 8 % 27).unwrap() - 13;
                Some(t.to_offset(UtcOffset::from_hms(hours, 0, 0).unwrap()))
            }
            Stamp::Parts(p) => p.value(),
            Stamp::GoZero(_) => Some(go_zero()),
            Stamp::Text(s) => OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok(),
            Stamp::Number(_) | Stamp::Null => None,
        }
    }
}

impl Parts {
    fn clamped(&self) -> (i32, u8, u8, u8, u8, u8, u32, usize, i16) {
        (
            i32::from(self.year % 10_000),
            self.month % 12 + 1,
            self.day % 31 + 1,
            self.hour % 24,
            self.minute % 60,
            self.second % 60,
            self.nanos % 1_000_000_000,
            usize::from(self.digits % 10),
            self.offset_minutes % (24 * 60),
        )
    }

    /// `digits` fraction digits (none when 0), `Z` for a zero offset.
    fn text(&self) -> String {
        let (y, mo, d, h, mi, s, nanos, digits, off) = self.clamped();
        let mut t = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
        if digits > 0 {
            let frac = format!("{nanos:09}");
            let _ = write!(t, ".{}", &frac[..digits]);
        }
        if off == 0 {
            t.push('Z');
        } else {
            let sign = if off < 0 { '-' } else { '+' };
            let a = off.unsigned_abs();
            let _ = write!(t, "{sign}{:02}:{:02}", a / 60, a % 60);
        }
        t
    }

    /// Built from the parts, not by parsing the text.
    fn value(&self) -> Option<OffsetDateTime> {
        let (y, mo, d, h, mi, s, nanos, digits, off) = self.clamped();
        let kept = nanos - nanos % 10u32.pow(9 - digits as u32);
        let date = Date::from_calendar_date(y, Month::try_from(mo).ok()?, d).ok()?;
        let clock = time::Time::from_hms_nano(h, mi, s, kept).ok()?;
        let offset = UtcOffset::from_whole_seconds(i32::from(off) * 60).ok()?;
        Some(PrimitiveDateTime::new(date, clock).assume_offset(offset))
    }
}

impl Count {
    pub(crate) fn json(&self) -> String {
        match self {
            Count::Small(n) => n.to_string(),
            Count::Any(n) => n.to_string(),
            Count::Edge(over) => (MAX_REQUESTS + u64::from(*over)).to_string(),
            Count::Negative(n) => (-(n.unsigned_abs().max(1) as i128)).to_string(),
            Count::Float(f) if f.is_finite() => format!("{:?}", f),
            Count::Float(_) => "1.5".into(),
            Count::Text(n) => quote(&n.to_string()),
            Count::Null => "null".into(),
        }
    }

    pub(crate) fn parse(&self) -> Option<u64> {
        match self {
            Count::Small(n) => Some(u64::from(*n)),
            Count::Any(n) => Some(*n),
            Count::Edge(over) => Some(MAX_REQUESTS + u64::from(*over)),
            // Floats (`1.0` included) and strings are not counts.
            Count::Negative(_) | Count::Float(_) | Count::Text(_) | Count::Null => None,
        }
    }
}
