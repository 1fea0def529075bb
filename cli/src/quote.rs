//! Names as a terminal may show them: a name can hold any byte but `/` and NUL,
//! so text output escapes what would mislead a reader — bytes that are not UTF-8
//! (`\xNN`), control characters (`\n`, `\t`, `\u{1b}`…), the bidirectional
//! overrides and isolates that reorder what follows them (U+202A–U+202E,
//! U+2066–U+2069), and the backslash itself (`\\`). Two different names never
//! print the same. JSON output carries the raw bytes instead (`bytes_field`).

use base64::Engine;

/// `name` with every misleading character escaped (see the module docs).
pub fn escape(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() || is_bidi_control(c) => {
                    out.push_str(&format!("\\u{{{:x}}}", c as u32));
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// For JSON: the raw bytes of `name`, base64 (standard alphabet, padded), when
/// they are not UTF-8 — `None` when the plain string field already says it all.
pub fn bytes_field(name: &[u8]) -> Option<String> {
    std::str::from_utf8(name)
        .is_err()
        .then(|| base64::engine::general_purpose::STANDARD.encode(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misleading_characters_are_escaped_and_names_stay_distinct() {
        assert_eq!(escape(b"plain name.txt"), "plain name.txt");
        assert_eq!(escape("café".as_bytes()), "café");
        assert_eq!(escape(b"a\nb\tc\\d"), "a\\nb\\tc\\\\d");
        assert_eq!(escape(b"bad\xffname"), "bad\\xffname");
        assert_eq!(escape(b"\x1b[31m"), "\\u{1b}[31m");
        assert_eq!(escape("x\u{202e}txt.exe".as_bytes()), "x\\u{202e}txt.exe");
        // A literal backslash-x sequence and the byte it spells differ.
        assert_ne!(escape(b"\\xff"), escape(b"\xff"));
        assert_eq!(bytes_field(b"ok"), None);
        assert_eq!(bytes_field(b"\xff\xfe").as_deref(), Some("//4="));
    }
}
