//! `Content-Disposition` with an ASCII `filename` for old clients and an RFC 8187
//! `filename*` carrying the real UTF-8 name. No crate writes both; this is small.

use http::HeaderValue;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// RFC 8187 `attr-char`s are left as they are; everything else is encoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Types a browser may render in place without risk to the origin (DESIGN §3).
pub fn is_inline(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("image", "svg+xml")) => false,
        Some(("image" | "video" | "audio", sub)) => !sub.is_empty(),
        _ => essence == "text/plain",
    }
}

/// Characters that reorder the text around them (Unicode bidi controls and
/// marks): in a file name they can show `gpj.exe` as `exe.jpg`.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

pub fn content_disposition(file_name: &str, inline: bool) -> HeaderValue {
    let kind = if inline { "inline" } else { "attachment" };
    // Shown, not obeyed: each control becomes a visible `_`.
    let shown: String;
    let file_name = if file_name.chars().any(is_bidi_control) {
        shown = file_name
            .chars()
            .map(|c| if is_bidi_control(c) { '_' } else { c })
            .collect();
        &shown
    } else {
        file_name
    };
    let fallback: String = file_name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' && c != '%' => c,
            _ => '_',
        })
        .collect();
    let encoded = utf8_percent_encode(file_name, ATTR_CHAR);
    let value = format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}");
    // Only printable ASCII went into `value`.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_only_for_safe_types() {
        for t in [
            "image/jpeg",
            "image/png",
            "video/mp4",
            "audio/ogg",
            "text/plain",
            "text/plain; charset=utf-8",
            "IMAGE/PNG",
        ] {
            assert!(is_inline(t), "{t}");
        }
        for t in [
            "image/svg+xml",
            "text/html",
            "application/pdf",
            "application/octet-stream",
            "text/javascript",
            "image/",
            "",
            "multipart/x-mixed-replace",
        ] {
            assert!(!is_inline(t), "{t}");
        }
    }

    #[test]
    fn non_ascii_name() {
        let v = content_disposition("Grüße \"1\" (2).jpg", true);
        assert_eq!(
            v.to_str().unwrap(),
            "inline; filename=\"Gr__e _1_ (2).jpg\"; filename*=UTF-8''Gr%C3%BC%C3%9Fe%20%221%22%20%282%29.jpg"
        );
    }

    #[test]
    fn bidi_controls_cannot_reorder_the_name() {
        for control in ['\u{202E}', '\u{2067}', '\u{200F}', '\u{061C}'] {
            let v = content_disposition(&format!("invoice{control}gpj.exe"), false);
            assert_eq!(
                v.to_str().unwrap(),
                "attachment; filename=\"invoice_gpj.exe\"; filename*=UTF-8''invoice_gpj.exe"
            );
        }
        // Right-to-left text itself is a name like any other.
        let v = content_disposition("שלום.txt", true);
        assert!(
            v.to_str()
                .unwrap()
                .ends_with("UTF-8''%D7%A9%D7%9C%D7%95%D7%9D.txt")
        );
    }

    #[test]
    fn header_injection_is_impossible() {
        let v = content_disposition("a\r\nSet-Cookie: x=1;.txt", false);
        let s = v.to_str().unwrap();
        assert!(!s.contains('\r') && !s.contains('\n'));
        assert!(s.starts_with("attachment; filename=\"a__Set-Cookie: x=1;.txt\""));
    }
}
