//! Go's time encoding: RFC 3339 with nanoseconds, zero time for "unset".

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";
const GO_ZERO_UNIX_SECONDS: i64 = -62_135_596_800;

fn parse<'de, D: serde::Deserializer<'de>>(text: &str) -> Result<OffsetDateTime, D::Error> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| serde::de::Error::custom(format!("invalid RFC 3339 timestamp {text:?}: {e}")))
}

pub mod go_time {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse::<D>(&text)
    }
}

/// `None` is written as Go's zero time; Go's zero time and `null` read as `None`.
pub mod go_time_opt {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => go_time::serialize(t, s),
            None => s.serialize_str(GO_ZERO_TIME),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
        let Some(text) = Option::<std::borrow::Cow<'de, str>>::deserialize(d)? else {
            return Ok(None);
        };
        let t = parse::<D>(&text)?;
        // Go's zero time, in any offset, means the session is still open.
        Ok(
            if t.unix_timestamp() == GO_ZERO_UNIX_SECONDS && t.nanosecond() == 0 {
                None
            } else {
                Some(t)
            },
        )
    }
}
