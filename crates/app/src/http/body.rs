//! Request bodies: JSON only, within the body limit, decoded naming the field
//! that failed (`stats[3].requests`).

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};

use super::error::ApiError;

/// Reads a JSON body of at most `limit` bytes: 415 for another content type,
/// charset or content coding, 413 when too large.
pub async fn read_json_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    check_json_headers(headers)?;
    let too_large = || {
        ApiError::invalid(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large.",
            "body",
            format!("request body larger than {limit} bytes (the server's --body-limit)"),
        )
    };
    if let Some(len) = headers.get(header::CONTENT_LENGTH)
        && let Some(len) = len.to_str().ok().and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // `to_bytes` reports the limit as a boxed `LengthLimitError` somewhere
        // in the source chain; anything else is a broken connection.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = s.source();
        }
        ApiError::bad_field("body", format!("cannot read the request body: {e}"))
    })
}

fn unsupported(header: &str, message: String) -> ApiError {
    ApiError::invalid(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Request body must be UTF-8 JSON.",
        header,
        message,
    )
}

fn check_json_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(unsupported(
            "Content-Type",
            "missing Content-Type: expected application/json".to_owned(),
        ));
    };
    let value = value.to_str().unwrap_or("").to_ascii_lowercase();
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !(essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json")))
    {
        return Err(unsupported(
            "Content-Type",
            format!("Content-Type {essence:?} is not supported: expected application/json"),
        ));
    }
    // JSON is UTF-8 (RFC 8259); a body declared otherwise would be misread.
    for param in parts {
        if let Some((name, charset)) = param.split_once('=')
            && name.trim() == "charset"
            && !matches!(charset.trim().trim_matches('"'), "utf-8" | "utf8" | "us-ascii")
        {
            return Err(unsupported(
                "Content-Type",
                format!("charset {charset:?} is not supported: send UTF-8 JSON"),
            ));
        }
    }
    if let Some(coding) = headers.get(header::CONTENT_ENCODING) {
        let coding = coding.to_str().unwrap_or("?").trim();
        if !(coding.is_empty() || coding.eq_ignore_ascii_case("identity")) {
            return Err(unsupported(
                "Content-Encoding",
                format!("Content-Encoding {coding:?} is not supported: send the JSON uncompressed"),
            ));
        }
    }
    Ok(())
}

/// Deserializes JSON, naming the field that failed (`stats[3].session_ended_at`).
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would also take a struct from a JSON array; the API takes objects only.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => return Err(ApiError::bad_field("body", "empty body: expected a JSON object")),
        Some(_) => return Err(ApiError::bad_field("body", "expected a JSON object")),
    }
    // Fast path without path tracking; bad input is decoded again to name the field.
    if let Ok(value) = serde_json::from_slice(bytes) {
        check_skipped_text(bytes)?;
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(decode_error)?;
    de.end()
        .map_err(|e| ApiError::bad_field("body", format!("invalid JSON: {e}")))?;
    check_skipped_text(bytes)?;
    Ok(value)
}

/// serde_json checks the strings it decodes but not those of ignored
/// fields: a body accepted whole must still be UTF-8 JSON text, without
/// lone surrogate escapes (RFC 8259 §8.1, §8.2).
fn check_skipped_text(bytes: &[u8]) -> Result<(), ApiError> {
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(ApiError::bad_field(
            "body",
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        ));
    }
    // Only a body with an escape can hide a lone surrogate; parse it fully.
    if memchr::memmem::find(bytes, b"\\u").is_some() {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .map_err(|e| ApiError::bad_field("body", format!("invalid JSON text: {e}")))?;
    }
    Ok(())
}

fn decode_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let message = inner.to_string();
    // `?` is a segment serde could not name (a broken key, a syntax error
    // between members): name its parent.
    let mut field = path.as_str();
    while let Some(parent) = field.strip_suffix('?') {
        field = parent.strip_suffix('.').unwrap_or(parent);
    }
    let mut field = if field == "." {
        String::new()
    } else {
        field.to_owned()
    };
    // A missing or repeated field is reported at its parent; name the field.
    if let Some(rest) = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("duplicate field `"))
        && let Some(name) = rest.split('`').next()
    {
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(name);
    }
    if field.is_empty() {
        field.push_str("body");
    }
    let message = match inner.classify() {
        serde_json::error::Category::Eof => format!("truncated JSON: {message}"),
        serde_json::error::Category::Syntax => format!("invalid JSON: {message}"),
        _ => message,
    };
    ApiError::bad_field(field, message)
}

/// A list item that must be a JSON object: serde would also build a struct
/// from an array of its fields in order, which no client means to send.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(MapOnly(d)).map(Object)
    }
}

/// Asks the inner deserializer for a map whatever the visitor wants.
struct MapOnly<D>(D);

impl<'de, D: serde::Deserializer<'de>> serde::Deserializer<'de> for MapOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Object<Inner>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        n: u64,
    }

    fn field_of(json: &[u8]) -> String {
        decode::<Outer>(json).unwrap_err().field.unwrap()
    }

    #[test]
    fn repeated_and_missing_fields_are_named_where_they_are() {
        assert_eq!(field_of(br#"{"items": [], "items": []}"#), "items");
        assert_eq!(
            field_of(br#"{"items": [{"n": 1}, {"n": 1, "n": 2}]}"#),
            "items[1].n"
        );
        assert_eq!(field_of(br#"{"items": [{"n": 1}, {}]}"#), "items[1].n");
        assert_eq!(field_of(br#"{}"#), "items");
        assert_eq!(field_of(b"{\"items\": [{\"n\": 1}] \xff}"), "body");
        assert_eq!(field_of(br#"{"items": [{"n": 1}]} {}"#), "body");
        assert_eq!(field_of(b"\xef\xbb\xbf{\"items\": []}"), "body");
        // An item as an array of its fields is not an object.
        assert_eq!(field_of(br#"{"items": [{"n": 1}, [2]]}"#), "items[1]");
        assert_eq!(
            decode::<Outer>(br#"{"items": [{"n": 1, "x": [2]}]}"#)
                .unwrap()
                .items[0]
                .0
                .n,
            1
        );
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_utf8_json_without_content_coding_is_read() {
        for ok in [
            "application/json",
            "Application/JSON; charset=UTF-8",
            "application/json;charset=\"utf-8\"",
            "application/vnd.coder+json",
        ] {
            check_json_headers(&headers(&[("content-type", ok)])).unwrap();
        }
        for (pairs, field) in [
            (vec![], "Content-Type"),
            (vec![("content-type", "text/plain")], "Content-Type"),
            (
                vec![("content-type", "application/json; charset=utf-16")],
                "Content-Type",
            ),
            (
                vec![("content-type", "application/x-www-form-urlencoded")],
                "Content-Type",
            ),
            (
                vec![("content-type", "application/json"), ("content-encoding", "gzip")],
                "Content-Encoding",
            ),
        ] {
            let err = check_json_headers(&headers(&pairs)).unwrap_err();
            assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{pairs:?}");
            assert_eq!(err.field.as_deref(), Some(field), "{pairs:?}");
        }
        check_json_headers(&headers(&[
            ("content-type", "application/json"),
            ("content-encoding", "identity"),
        ]))
        .unwrap();
    }
}
