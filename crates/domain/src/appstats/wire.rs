//! The wire encoding: Go's times (RFC 3339 with nanoseconds, zero time for
//! "unset") and counts as JSON Schema's integers.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";
const GO_ZERO_UNIX_SECONDS: i64 = -62_135_596_800;

fn parse<'de, D: serde::Deserializer<'de>>(text: &str) -> Result<OffsetDateTime, D::Error> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| serde::de::Error::custom(format!("invalid RFC 3339 timestamp {text:?}: {e}")))
}

/// A time as Go writes it: RFC 3339 with nanoseconds.
pub mod go_time {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes RFC 3339, with as many fraction digits as needed.
    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    /// Reads RFC 3339 in any offset, naming the text when it is not.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse::<D>(&text)
    }
}

/// `None` is written as Go's zero time; Go's zero time and `null` read as `None`.
pub mod go_time_opt {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the time, or Go's zero time for `None`.
    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => go_time::serialize(t, s),
            None => s.serialize_str(GO_ZERO_TIME),
        }
    }

    /// Reads `null`, no value or Go's zero time (any offset) as `None`.
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

/// A count as JSON Schema's `integer` has it: a JSON integer, or a number
/// written with a zero fraction or an exponent (`12.0`, `1e3`), which is
/// the same value. Anything else is refused as serde refuses it for `u64`.
pub mod whole_number {
    use serde::de::{Deserializer, Error, Unexpected, Visitor};

    struct WholeNumber;

    impl Visitor<'_> for WholeNumber {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("u64")
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<u64, E> {
            // 2^64 is the first whole f64 past u64::MAX.
            if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
                Ok(v as u64)
            } else {
                Err(E::invalid_type(Unexpected::Float(v), &self))
            }
        }
    }

    /// Reads a whole number as a `u64`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(WholeNumber)
    }

    /// The same for an optional count; `null` is none.
    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        struct Optional;

        impl<'de> Visitor<'de> for Optional {
            type Value = Option<u64>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("u64 or null")
            }

            fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                deserialize(d).map(Some)
            }
        }

        d.deserialize_option(Optional)
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Counts {
        #[serde(deserialize_with = "super::whole_number::deserialize")]
        n: u64,
        #[serde(default, deserialize_with = "super::whole_number::option")]
        m: Option<u64>,
    }

    fn decode(json: &str) -> Result<(u64, Option<u64>), String> {
        serde_json::from_str::<Counts>(json)
            .map(|c| (c.n, c.m))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_in_any_notation_are_counts() {
        assert_eq!(decode(r#"{"n": 12}"#), Ok((12, None)));
        assert_eq!(decode(r#"{"n": 12.0, "m": 1e3}"#), Ok((12, Some(1000))));
        assert_eq!(
            decode(r#"{"n": 4294967294.0, "m": null}"#),
            Ok((4_294_967_294, None))
        );
        assert_eq!(decode(r#"{"n": 18446744073709551615}"#), Ok((u64::MAX, None)));
        for (json, says) in [
            (
                r#"{"n": 1.5}"#,
                "invalid type: floating point `1.5`, expected u64",
            ),
            (r#"{"n": -1}"#, "invalid value: integer `-1`, expected u64"),
            (
                r#"{"n": -1.0}"#,
                "invalid type: floating point `-1.0`, expected u64",
            ),
            (
                r#"{"n": 1e20}"#,
                "invalid type: floating point `1e+20`, expected u64",
            ),
            (r#"{"n": "7"}"#, "invalid type: string \"7\", expected u64"),
            (r#"{"n": null}"#, "invalid type: null, expected u64"),
            (
                r#"{"n": 1, "m": 0.5}"#,
                "invalid type: floating point `0.5`, expected u64",
            ),
        ] {
            let err = decode(json).unwrap_err();
            assert!(err.starts_with(says), "{json}: {err}");
        }
    }
}
