//! Reversible text form of the raw bytes the kernel hands over (arguments,
//! paths), which need not be UTF-8.
//!
//! Valid UTF-8 passes through unchanged. Each byte that is not part of a
//! valid UTF-8 sequence becomes `\xHH`. A literal backslash is doubled only
//! where it would otherwise be read as the start of an escape: when the
//! next byte is `x`, a backslash, or itself an escaped byte. [`unescape`]
//! inverts [`escape`] exactly, so `unescape(escape(b)) == b` for any bytes.

use std::fmt::Write as _;

/// Returns the escaped form of `bytes`.
pub fn escape(bytes: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(bytes) {
        if !s.contains('\\') {
            return s.to_owned();
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, invalid) = match std::str::from_utf8(rest) {
            Ok(s) => (s, 0),
            Err(e) => {
                let (v, _) = rest.split_at(e.valid_up_to());
                // SAFETY-free: from_utf8 just validated this prefix.
                let v = std::str::from_utf8(v).unwrap_or_default();
                (v, e.error_len().unwrap_or(rest.len() - e.valid_up_to()))
            }
        };
        let after_valid = &rest[valid.len()..];
        for (i, c) in valid.char_indices() {
            if c == '\\' {
                let next = valid.as_bytes().get(i + 1).copied();
                let escaped_next = next.is_none() && invalid > 0;
                if escaped_next || matches!(next, Some(b'x') | Some(b'\\')) {
                    out.push_str("\\\\");
                    continue;
                }
            }
            out.push(c);
        }
        for b in &after_valid[..invalid] {
            let _ = write!(out, "\\x{b:02x}");
        }
        rest = &after_valid[invalid..];
    }
    out
}

/// Inverts [`escape`]: `\xHH` becomes byte `HH`, `\\` a backslash, and any
/// other backslash stays as it is.
pub fn unescape(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if b.get(i + 1) == Some(&b'x') {
                let hex = b
                    .get(i + 2..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok());
                if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn utf8_without_backslash_is_unchanged() {
        assert_eq!(escape("x y".as_bytes()), "x y");
        assert_eq!(escape("héllo".as_bytes()), "héllo");
    }

    #[test]
    fn invalid_bytes_become_hex_escapes() {
        assert_eq!(escape(b"a\xffb"), "a\\xffb");
        assert_eq!(escape(b"\xc3"), "\\xc3");
    }

    #[test]
    fn backslashes_are_doubled_only_when_ambiguous() {
        assert_eq!(escape(b"a\\nb"), "a\\nb");
        assert_eq!(escape(b"\\x41"), "\\\\x41");
        assert_eq!(escape(b"\\\\"), "\\\\\\");
        assert_eq!(escape(b"\\\xff"), "\\\\\\xff");
    }

    proptest! {
        #[test]
        fn escape_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(unescape(&escape(&bytes)), bytes);
        }

        #[test]
        fn escape_round_trips_backslash_heavy(
            bytes in proptest::collection::vec(prop_oneof![Just(b'\\'), Just(b'x'), Just(b'f'), Just(0xffu8), Just(b'a')], 0..32)
        ) {
            prop_assert_eq!(unescape(&escape(&bytes)), bytes);
        }
    }
}
