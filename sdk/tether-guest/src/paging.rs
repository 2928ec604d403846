//! Page tokens. The host hands a connector's `next-token` back verbatim, so
//! a token is whatever the upstream needs to go on: an offset, a cursor, or
//! SCIM's 1-based `startIndex`. A token from the host is checked like any
//! input: a bad one is an `invalid-argument` error, not a panic.

use crate::types::ConnectorError;

/// A numeric token (an offset or a `startIndex`), or `first` when there is
/// none (the first page).
pub fn number_token(token: Option<&str>, first: u64, what: &str) -> Result<u64, ConnectorError> {
    match token {
        None => Ok(first),
        Some(token) => token.parse().map_err(|_| ConnectorError::InvalidArgument(format!("bad {what} page token {token:?}"))),
    }
}

/// SCIM-style paging (RFC 7644 §3.4.2.4): after `got` items from 1-based
/// `start`, the next `startIndex`, if there may be more. `totalResults` is
/// required by the RFC, but a server that leaves it out still pages: a full
/// page (`got == page_size`) means there may be more. An empty page ends it
/// whatever the total says, so a server that miscounts cannot loop us.
pub fn next_start_index(start: u64, got: u64, page_size: u64, total: Option<u64>) -> Option<u64> {
    if got == 0 {
        return None;
    }
    let next = start + got;
    let more = match total {
        Some(total) => next <= total,
        None => got >= page_size,
    };
    more.then_some(next)
}

/// Offset-style paging where the upstream says nothing of the total: after
/// `got` items from `offset`, the next offset if the page was full.
pub fn next_offset(offset: u64, got: u64, page_size: u64) -> Option<u64> {
    (got > 0 && got >= page_size).then_some(offset + got)
}

/// Cursor-style paging: the upstream's cursor, with an empty one (as some
/// APIs send on the last page) read as none.
pub fn next_cursor(cursor: Option<&str>) -> Option<String> {
    cursor.filter(|c| !c.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_tokens() {
        assert_eq!(number_token(None, 1, "SCIM").unwrap(), 1);
        assert_eq!(number_token(Some("101"), 1, "SCIM").unwrap(), 101);
        let err = number_token(Some("x1"), 1, "SCIM").unwrap_err();
        assert!(matches!(&err, ConnectorError::InvalidArgument(m) if m == "bad SCIM page token \"x1\""), "{err:?}");
        assert!(number_token(Some("-1"), 1, "SCIM").is_err());
    }

    #[test]
    fn start_index_paging() {
        assert_eq!(next_start_index(1, 100, 100, Some(250)), Some(101));
        assert_eq!(next_start_index(201, 50, 100, Some(250)), None);
        assert_eq!(next_start_index(1, 100, 100, Some(100)), None);
        // A server that caps count below what we asked for: the total decides.
        assert_eq!(next_start_index(1, 10, 100, Some(25)), Some(11));
        // No total: a full page may have a successor.
        assert_eq!(next_start_index(1, 100, 100, None), Some(101));
        assert_eq!(next_start_index(1, 99, 100, None), None);
        // An empty page ends the listing even when the total says more.
        assert_eq!(next_start_index(5, 0, 100, Some(1000)), None);
    }

    #[test]
    fn offsets_and_cursors() {
        assert_eq!(next_offset(0, 100, 100), Some(100));
        assert_eq!(next_offset(100, 3, 100), None);
        assert_eq!(next_offset(0, 0, 100), None);
        assert_eq!(next_cursor(Some("abc")).as_deref(), Some("abc"));
        assert_eq!(next_cursor(Some("")), None);
        assert_eq!(next_cursor(None), None);
    }
}
