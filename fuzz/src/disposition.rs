//! `Content-Disposition` (RFC 6266, RFC 8187) for any file name, and which types
//! are shown inline. Fields: the file name (all of the input), or for `is_inline`
//! the same text as a content type.
//!
//! The header is always valid visible ASCII (so no CR/LF can split it), its
//! `filename` fallback is one quoted-string character per name character, and its
//! `filename*` decodes back to the name (characters that only steer how text is
//! shown may be written as `_`).

use percent_encoding::percent_decode_str;
use upslot::http::disposition::{content_disposition, is_inline};

/// RFC 8187 `attr-char`.
fn is_attr_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b)
}

pub fn check(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    for inline in [true, false] {
        let value = content_disposition(name, inline);
        let bytes = value.as_bytes();
        assert!(
            bytes.iter().all(|b| (b' '..=b'~').contains(b)),
            "{value:?} holds a byte outside visible ASCII"
        );
        let text = value.to_str().expect("visible ASCII");
        let kind = if inline { "inline" } else { "attachment" };
        let rest = text
            .strip_prefix(kind)
            .and_then(|r| r.strip_prefix("; filename=\""))
            .unwrap_or_else(|| panic!("{text:?} for {name:?}"));
        let (fallback, encoded) = rest
            .split_once("\"; filename*=UTF-8''")
            .unwrap_or_else(|| panic!("{text:?} for {name:?}"));
        assert!(!fallback.contains(['"', '\\']), "{fallback:?}");
        assert_eq!(fallback.chars().count(), name.chars().count(), "{text:?}");
        assert!(
            encoded
                .split('%')
                .skip(1)
                .all(|hex| hex.len() >= 2 && hex.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit)),
            "{encoded:?}: a bare %"
        );
        assert!(
            encoded.bytes().all(|b| b == b'%' || is_attr_char(b)),
            "{encoded:?} holds a byte that is not an attr-char"
        );
        // The name itself, but for characters shown as `_` rather than obeyed
        // (Unicode bidi controls, which could make `gpj.exe` read `exe.jpg`).
        let decoded = percent_decode_str(encoded).decode_utf8().expect("UTF-8");
        assert_eq!(decoded.chars().count(), name.chars().count(), "{text:?}");
        for (shown, was) in decoded.chars().zip(name.chars()) {
            assert!(
                shown == was || (shown == '_' && !was.is_alphanumeric()),
                "{was:?} shown as {shown:?} in {text:?}"
            );
        }
    }
    if is_inline(name) {
        let essence = name
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let (kind, sub) = essence.split_once('/').expect("a type/subtype");
        assert!(
            ["image", "audio", "video"].contains(&kind) && !sub.is_empty()
                || essence == "text/plain",
            "{name:?} shown inline"
        );
        assert_ne!(essence, "image/svg+xml", "SVG runs scripts");
    }
}
