//! Connector text made safe for the operator's terminal.
//!
//! Everything a connector says — log messages, error strings, its stderr,
//! display names and attributes — is untrusted. Control characters (C0, DEL,
//! C1) could move the cursor, rewrite earlier lines, change the window title
//! or ring the bell, and a newline followed by `INFO tether: …` would forge a
//! host line. So they are shown as visible escapes (`\x1b`, `\n`, `\u{9b}`),
//! as are the bidirectional overrides that reorder what a reader sees.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` on one line with every control character shown as an escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// At most `max` bytes of `text` (cut at a character boundary), saying how
/// much was left out: a connector's message is shown and stored, never
/// its megabytes.
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} more bytes)", &text[..end], text.len() - end))
}

/// The longest connector text (an error message) the host passes on.
pub const MAX_CONNECTOR_TEXT: usize = 4096;

/// Like [`escape`], but the text's own line breaks are kept, every
/// continuation line marked with `  | `: a crash report stays readable, and
/// no line of it can start the way a host line starts.
pub fn escape_multiline(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push_str("\n  | ");
        }
        out.push_str(&escape(line.strip_suffix('\r').unwrap_or(line)));
    }
    out
}

/// Like [`escape`], but the text's own line breaks are kept as they are:
/// for the host's own messages of several lines, in which a connector's
/// text is already escaped.
pub fn escape_keeping_lines(text: &str) -> String {
    text.split('\n').map(|line| escape(line.strip_suffix('\r').unwrap_or(line))).collect::<Vec<_>>().join("\n")
}

/// A line of JSON made safe for a terminal and still the same JSON: serde
/// already writes C0 controls as `\u00XX`; C1 and bidi controls, which it
/// leaves raw, become `\uXXXX` too (outside strings JSON has none).
pub fn escape_json(line: &str) -> Cow<'_, str> {
    if !line.chars().any(needs_escape) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if needs_escape(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A writer for what may reach a terminal raw (CSV or JSON Lines on
/// stdout): each line is escaped as [`escape`] does, its line break kept.
/// Wrap stdout in it only when stdout is a terminal: a file or a pipe gets
/// the data as it is.
pub struct SafeLines<W: std::io::Write> {
    inner: W,
    line: Vec<u8>,
    lines: Lines,
    /// Within a quoted CSV cell (`""` inside one toggles twice).
    in_quotes: bool,
}

/// What a [`SafeLines`] writes, for how it escapes a line.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lines {
    /// Text for a person (tables): as [`escape`] does.
    Text,
    /// CSV: as text, and a line break inside a quoted cell is the cell's,
    /// shown escaped (raw, a connector's name could start a forged line).
    Csv,
    /// JSON Lines: as [`escape_json`] does, so each line stays the JSON.
    Json,
}

impl<W: std::io::Write> SafeLines<W> {
    pub fn new(inner: W, lines: Lines) -> Self {
        SafeLines { inner, line: Vec::new(), lines, in_quotes: false }
    }

    fn emit(&mut self) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        let shown = if self.lines == Lines::Json { escape_json(text) } else { escape(text) };
        self.inner.write_all(shown.as_bytes())?;
        self.line.clear();
        Ok(())
    }
}

impl<W: std::io::Write> std::io::Write for SafeLines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for part in buf.split_inclusive(|&b| b == b'\n') {
            if self.lines == Lines::Csv {
                let quotes = part.iter().filter(|&&b| b == b'"').count();
                self.in_quotes ^= quotes % 2 == 1;
                if self.in_quotes {
                    // The break is the cell's: kept in the line, escaped.
                    self.line.extend_from_slice(part);
                    continue;
                }
            }
            match part.strip_suffix(b"\n") {
                Some(rest) => {
                    self.line.extend_from_slice(rest);
                    self.emit()?;
                    self.inner.write_all(b"\n")?;
                }
                None => self.line.extend_from_slice(part),
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.line.is_empty() {
            self.emit()?;
        }
        self.inner.flush()
    }
}

/// Stdout, escaped line by line (as `lines` says) when it is a terminal.
pub fn stdout_for_data(lines: Lines) -> Box<dyn std::io::Write> {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        Box::new(SafeLines::new(std::io::stdout(), lines))
    } else {
        Box::new(std::io::stdout())
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

/// Unicode's explicit directional formatting characters.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\\' => out.push('\\'),
        c if (c as u32) < 0x80 && needs_escape(c) => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn safe_lines_escape_each_line_and_keep_the_breaks() {
        use std::io::Write;
        let mut out = SafeLines::new(Vec::new(), Lines::Text);
        out.write_all(b"a,\x1b]0;t\x07,b\r\nc,\xc2").unwrap();
        out.write_all(b"\x9b2J\n").unwrap();
        out.write_all(b"tail").unwrap();
        out.flush().unwrap();
        let text = String::from_utf8(out.inner).unwrap();
        assert_eq!(text, "a,\\x1b]0;t\\x07,b\nc,\\u{9b}2J\ntail");
    }

    #[test]
    fn safe_csv_lines_escape_a_line_break_inside_a_quoted_cell() {
        use std::io::Write;
        let mut out = SafeLines::new(Vec::new(), Lines::Csv);
        // Written in pieces, as a buffered writer may hand them over.
        out.write_all(b"id,name\r\n1,\"Ann\nINFO forged ").unwrap();
        out.write_all(b"line\r\n\"\"x\"\"\"\r\n2,Bo\r\n").unwrap();
        out.flush().unwrap();
        let text = String::from_utf8(out.inner).unwrap();
        assert_eq!(text, "id,name\n1,\"Ann\\nINFO forged line\\r\\n\"\"x\"\"\"\n2,Bo\n");
    }

    #[test]
    fn safe_json_lines_stay_json() {
        use std::io::Write;
        let mut out = SafeLines::new(Vec::new(), Lines::Json);
        out.write_all("{\"name\":\"a\u{9b}2J \u{202e}b\"}\n".as_bytes()).unwrap();
        out.flush().unwrap();
        let text = String::from_utf8(out.inner).unwrap();
        assert_eq!(text, "{\"name\":\"a\\u009b2J \\u202eb\"}\n");
        let value: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(value["name"], "a\u{9b}2J \u{202e}b");
    }

    use super::*;

    #[test]
    fn control_characters_become_visible() {
        assert_eq!(escape("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(escape("\x1b[2J\x07bell\r"), "\\x1b[2J\\x07bell\\r");
        assert_eq!(escape("one\nINFO tether: forged"), "one\\nINFO tether: forged");
        assert_eq!(escape("c1 \u{9b}31m"), "c1 \\u{9b}31m");
        assert_eq!(escape("del \x7f, rlo \u{202e}"), "del \\x7f, rlo \\u{202e}");
    }

    #[test]
    fn json_stays_json_without_raw_controls() {
        let line = serde_json::json!({ "name": "a\u{9b}31m\u{202e}b\u{1b}" }).to_string();
        let safe = escape_json(&line);
        assert!(!safe.chars().any(needs_escape), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["name"], "a\u{9b}31m\u{202e}b\u{1b}");
    }

    #[test]
    fn multiline_text_keeps_its_lines_indented() {
        assert_eq!(escape_multiline("panicked\nINFO tether: forged\x1b]0;t\x07"), "panicked\n  | INFO tether: forged\\x1b]0;t\\x07");
    }
}
