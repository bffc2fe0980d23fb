//! PostgreSQL's binary COPY format, for the columns tally writes.

use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const PG_EPOCH: OffsetDateTime = datetime!(2000-01-01 0:00 UTC);

/// A binary COPY stream being built: header, tuples, trailer.
#[derive(Debug)]
pub struct CopyBuf {
    buf: Vec<u8>,
}

impl CopyBuf {
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + 21);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self { buf }
    }

    pub fn tuple(&mut self, fields: i16) -> &mut Self {
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self
    }

    pub fn uuid(&mut self, v: Uuid) -> &mut Self {
        self.buf.extend_from_slice(&16i32.to_be_bytes());
        self.buf.extend_from_slice(v.as_bytes());
        self
    }

    /// Text; callers keep lengths far below `i32::MAX` (slugs are capped).
    pub fn text(&mut self, v: &str) -> &mut Self {
        let len = i32::try_from(v.len()).unwrap_or(i32::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(v.as_bytes());
        self
    }

    pub fn int8(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// `timestamptz`: microseconds since 2000-01-01 UTC (callers pass whole
    /// microseconds).
    pub fn timestamptz(&mut self, v: OffsetDateTime) -> &mut Self {
        let micros = (v - PG_EPOCH).whole_microseconds();
        self.int8(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_header_fields_and_trailer() {
        let mut c = CopyBuf::with_capacity(0);
        c.tuple(2).int8(7).timestamptz(datetime!(2000-01-01 0:00:01 UTC));
        let b = c.finish();
        assert_eq!(&b[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(&b[19..21], &2i16.to_be_bytes());
        assert_eq!(&b[21..25], &8i32.to_be_bytes());
        assert_eq!(&b[25..33], &7i64.to_be_bytes());
        assert_eq!(&b[37..45], &1_000_000i64.to_be_bytes());
        assert_eq!(&b[45..], &(-1i16).to_be_bytes());
    }
}
