//! Reading upstream JSON without panicking on its shape: field by field
//! from a `Value`, or straight into a connector's own structs through the
//! lenient field types [`Flag`] and [`Text`].

use std::fmt;
use std::marker::PhantomData;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// `value[key]` as a string, if it is one.
pub fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// `value[key]` as a non-empty string.
pub fn non_empty<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    text(value, key).filter(|s| !s.is_empty())
}

/// `value[key]` as a bool; SCIM servers sometimes send `"true"`/`"false"`.
pub fn flag(value: &Value, key: &str) -> Option<bool> {
    match value.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// `value[key]` as a list (empty when absent or not a list).
pub fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// `value[key]` as a u64; also from a numeric string.
pub fn number(value: &Value, key: &str) -> Option<u64> {
    match value.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A bool field of a typed upstream record, read as leniently as [`flag`]
/// reads one: a bool, or `"true"`/`"false"`; anything else reads as
/// absent instead of failing the whole page. A listing that reads a page
/// into structs of these (with `#[serde(default)]`) skips the fields it
/// does not name and builds no `Value` per object: a page of a hundred
/// memberships is then a few strings, not thousands of map entries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub Option<bool>);

impl Flag {
    /// The flag, or `default` when absent or not a bool.
    pub fn or(self, default: bool) -> bool {
        self.0.unwrap_or(default)
    }

    /// True only when the upstream said true.
    pub fn is_true(self) -> bool {
        self.0 == Some(true)
    }
}

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Lenient::<bool>(PhantomData)).map(Flag)
    }
}

/// A string field of a typed upstream record: the string if it is one,
/// else absent (as [`text`] reads one).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Text(pub Option<String>);

impl Text {
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The string, if it is one and not empty.
    pub fn non_empty(self) -> Option<String> {
        self.0.filter(|s| !s.is_empty())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Lenient::<String>(PhantomData)).map(Text)
    }
}

/// What a lenient field keeps of a bool or a string it is given.
trait Kept: Sized {
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_str(text: &str) -> Option<Self>;
    fn from_string(text: String) -> Option<Self> {
        Self::from_str(&text)
    }
}

impl Kept for bool {
    fn from_bool(b: bool) -> Option<Self> {
        Some(b)
    }
    fn from_str(text: &str) -> Option<Self> {
        if text.eq_ignore_ascii_case("true") {
            Some(true)
        } else if text.eq_ignore_ascii_case("false") {
            Some(false)
        } else {
            None
        }
    }
}

impl Kept for String {
    fn from_str(text: &str) -> Option<Self> {
        Some(text.to_string())
    }
    fn from_string(text: String) -> Option<Self> {
        Some(text)
    }
}

/// Reads any JSON value, keeping what `T` makes of a bool or a string:
/// numbers, nulls, lists and objects are read past (never built) and give
/// none. Going through `Value` cost a map entry or a string per field of
/// every membership of a page.
struct Lenient<T>(PhantomData<T>);

impl<'de, T: Kept> Visitor<'de> for Lenient<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(T::from_bool(b))
    }
    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(T::from_str(text))
    }
    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(T::from_string(text))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_tolerate_wrong_shapes() {
        let v = json!({"a": "x", "b": "", "c": true, "d": "FALSE", "e": [1], "f": 3, "g": "4", "h": {}});
        assert_eq!(text(&v, "a"), Some("x"));
        assert_eq!(non_empty(&v, "b"), None);
        assert_eq!(text(&v, "c"), None);
        assert_eq!(flag(&v, "c"), Some(true));
        assert_eq!(flag(&v, "d"), Some(false));
        assert_eq!(flag(&v, "a"), None);
        assert_eq!(list(&v, "e").len(), 1);
        assert!(list(&v, "h").is_empty());
        assert_eq!(number(&v, "f"), Some(3));
        assert_eq!(number(&v, "g"), Some(4));
        assert_eq!(number(&v, "a"), None);
    }

    #[test]
    fn typed_fields_tolerate_wrong_shapes() {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Member {
            name: Text,
            admin: Flag,
            guest: Flag,
            active: Flag,
        }
        let m: Member = serde_json::from_str(r#"{"name": 7, "admin": "TRUE", "guest": {"x": [1]}, "other": [true]}"#).unwrap();
        assert_eq!(m.name, Text(None));
        assert!(m.admin.is_true());
        assert_eq!(m.guest, Flag(None));
        assert!(!m.guest.is_true());
        assert!(m.active.or(true));
        let m: Member = serde_json::from_str(r#"{"name": null, "admin": 1, "guest": "False", "active": [{"a": {"b": [null, 2.5]}}]}"#).unwrap();
        assert_eq!((m.name, m.admin, m.guest, m.active), (Text(None), Flag(None), Flag(Some(false)), Flag(None)));
        let m: Member = serde_json::from_str(r#"{"name": "Ann", "active": false}"#).unwrap();
        assert_eq!(m.name.as_deref(), Some("Ann"));
        assert!(!m.active.or(true));
        assert_eq!(Text(Some(String::new())).non_empty(), None);
    }
}
