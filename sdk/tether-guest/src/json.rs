//! Reading upstream JSON without panicking on its shape.

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
}
