//! JSON Schemas (for the API's OpenAPI document) of wire rules that a
//! derived schema cannot state.

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{KnownFormat, Object, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};

/// The nil UUID, which no id may be.
pub const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// Adds JSON Schema keywords utoipa has no field for (`not`, `const`):
/// extensions are written flat into the schema object.
pub fn with_keywords(
    mut object: Object,
    keywords: impl IntoIterator<Item = (&'static str, serde_json::Value)>,
) -> Object {
    let extra: Extensions = keywords.into_iter().collect();
    match &mut object.extensions {
        Some(existing) => existing.merge(extra),
        None => object.extensions = Some(extra),
    }
    object
}

/// A UUID other than the nil UUID (an unset id in Go).
pub fn non_nil_uuid() -> RefOr<Schema> {
    let uuid = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .description(Some("A UUID, not the nil UUID."))
        .build();
    Schema::Object(with_keywords(
        uuid,
        [("not", serde_json::json!({"const": NIL_UUID}))],
    ))
    .into()
}
