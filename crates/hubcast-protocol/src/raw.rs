//! A serde helper both directions use: reading a field as raw JSON while
//! telling "absent" from "present", `null` included.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// Deserializes a present field, `null` included, as `Some(raw)`; with
/// `#[serde(default)]` an absent field is `None`.
pub(crate) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}
