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
/// `start`, the next `startIndex`, if there may be more; an error when the
/// answer contradicts itself, since a listing cut short would be taken
/// for the whole (and a later diff would show the rest as removed):
/// - `answered_start`, the `startIndex` the server says it answered, is
///   not `start` (it ignores paging);
/// - an empty page where `totalResults` counts more;
/// - more items than `totalResults` counts.
///
/// `totalResults` is required by the RFC; without it a server may still
/// cap a page below `page_size`, so every non-empty page may have a
/// successor (it may have capped `count`), and an empty page ends the
/// listing.
pub fn next_start_index(start: u64, got: u64, total: Option<u64>, answered_start: Option<u64>) -> Result<Option<u64>, String> {
    if let Some(answered) = answered_start.filter(|&answered| answered != start) {
        return Err(format!("asked for startIndex {start}, the server answered startIndex {answered}: it does not page as SCIM does"));
    }
    let last = start + got.saturating_sub(1);
    match total {
        Some(total) if got == 0 && start <= total => {
            Err(format!("the server counts {total} results (totalResults) but answered none from startIndex {start}: the listing would be incomplete"))
        }
        Some(total) if got > 0 && last > total => {
            Err(format!("the server answered results up to {last} but counts {total} (totalResults): its pages contradict its count"))
        }
        _ if got == 0 => Ok(None),
        Some(total) => Ok((start + got <= total).then_some(start + got)),
        None => Ok(Some(start + got)),
    }
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
        let next = |start, got, total, answered| next_start_index(start, got, total, answered);
        assert_eq!(next(1, 100, Some(250), Some(1)), Ok(Some(101)));
        assert_eq!(next(201, 50, Some(250), None), Ok(None));
        assert_eq!(next(1, 100, Some(100), None), Ok(None));
        // A server that caps count below what we asked for: the total decides.
        assert_eq!(next(1, 10, Some(25), None), Ok(Some(11)));
        // No total: any page may have a successor; an empty one ends it.
        assert_eq!(next(1, 50, None, None), Ok(Some(51)));
        assert_eq!(next(51, 0, None, None), Ok(None));
        assert_eq!(next(1, 0, Some(0), None), Ok(None));
        // Answers that contradict themselves are errors, not a short listing.
        assert!(next(101, 0, Some(250), None).unwrap_err().contains("counts 250 results"));
        assert!(next(1, 100, Some(1), None).unwrap_err().contains("contradict its count"));
        assert!(next(101, 100, Some(250), Some(1)).unwrap_err().contains("does not page"));
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
