//! `SlotPath::parse`: what it accepts is a clean slot path (DESIGN §3), decoded
//! exactly once, whose storage key is plain hex; and `encode` round-trips every
//! clean path.

use upslot::path::{PathError, SlotPath};
use upslot::store::Key;

const BASES: [&str; 3] = ["/upload/", "/", "/a/b-c/"];

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The input as a request path, below each base.
    for base in BASES {
        check_request(text, base);
    }
    // The input as a decoded path: the URL we print for it reads back as it.
    let printed = format!("/upload/{}", SlotPath::encode(text));
    match SlotPath::parse(&printed, "/upload/") {
        Ok(p) => {
            assert_eq!(p.as_str(), text, "{printed:?} decoded to something else");
            assert!(is_clean(text), "{text:?} was accepted");
        }
        Err(e) => assert!(!is_clean(text), "{text:?} ({printed:?}) refused: {e}"),
    }
}

fn check_request(raw: &str, base: &str) {
    let below = raw.strip_prefix(base).filter(|rest| !rest.is_empty());
    match (SlotPath::parse(raw, base), below) {
        (Ok(p), Some(rest)) => {
            let decoded = p.as_str();
            assert!(is_clean(decoded), "{raw:?} -> {decoded:?}");
            // Decoding made no new segments: an encoded '/' is refused, not split.
            assert_eq!(
                decoded.split('/').count(),
                rest.split('/').count(),
                "{raw:?}"
            );
            let segments: Vec<&str> = decoded.split('/').collect();
            assert_eq!(Some(&p.first_segment()), segments.first());
            assert_eq!(Some(&p.file_name()), segments.last());
            // Decoded once: printing it and parsing that gives it back.
            let again = SlotPath::parse(&format!("{base}{}", SlotPath::encode(decoded)), base);
            assert_eq!(again.as_ref(), Ok(&p), "{raw:?}");
            let hex = Key::for_path(decoded).hex();
            assert!(
                hex.len() == 64
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "key {hex:?}"
            );
        }
        (Ok(p), None) => panic!("{raw:?} outside {base:?} parsed as {p:?}"),
        (Err(PathError::OutsideBase), below) => {
            assert!(below.is_none(), "{raw:?} is below {base:?}")
        }
        (Err(PathError::Invalid(_)), below) => {
            assert!(
                below.is_some(),
                "{raw:?} is outside {base:?}: must be 404, not 400"
            )
        }
    }
}

/// path.rs's rules for a decoded path: non-empty segments that are not `.` or `..`
/// and hold no control character or backslash.
pub fn is_clean(decoded: &str) -> bool {
    decoded.split('/').all(|s| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && !s.contains('\\')
            && !s.chars().any(char::is_control)
    })
}
