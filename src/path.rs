//! The signed path: the request path below `base_path`, percent-decoded exactly once
//! (either hex case; `+` stays `+`), as every XMPP server signs it.
//!
//! A path is refused unless each segment decodes to non-empty UTF-8 without NUL or
//! other control characters, and is neither `.` nor `..`, and no segment holds an
//! encoded `/`. Storage never uses the path as a file name (it uses a hash of it),
//! so this is about refusing nonsense early, not the only guard against traversal.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotPath(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not below `base_path`: nothing of ours lives there.
    #[error("not found")]
    OutsideBase,
    #[error("bad path: {0}")]
    Invalid(&'static str),
}

impl SlotPath {
    /// `raw` is the request target's path exactly as received (no query).
    pub fn parse(raw: &str, base_path: &str) -> Result<SlotPath, PathError> {
        let rest = raw.strip_prefix(base_path).ok_or(PathError::OutsideBase)?;
        if rest.is_empty() {
            return Err(PathError::OutsideBase);
        }
        let mut decoded = String::with_capacity(rest.len());
        for (i, segment) in rest.split('/').enumerate() {
            if i > 0 {
                decoded.push('/');
            }
            decoded.push_str(&decode_segment(segment)?);
        }
        Ok(SlotPath(decoded))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first segment: the slot id of a JWT upload, the user of an ejabberd one.
    pub fn first_segment(&self) -> &str {
        self.0.split('/').next().unwrap_or("")
    }

    /// The last segment: the file name the uploader chose.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// Builds the percent-encoded form of a path, for URLs that we print.
    pub fn encode(decoded: &str) -> String {
        decoded
            .split('/')
            .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
            .collect::<Vec<_>>()
            .join("/")
    }
}

impl fmt::Display for SlotPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Characters left unescaped in a segment we print: RFC 3986 unreserved.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| hex_value(*c));
            let lo = bytes.get(i + 2).and_then(|c| hex_value(*c));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::Invalid("malformed percent-encoding"));
            };
            let byte = hi << 4 | lo;
            if byte == b'/' {
                return Err(PathError::Invalid("encoded '/' inside a segment"));
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    let segment = String::from_utf8(out).map_err(|_| PathError::Invalid("not UTF-8"))?;
    if segment.is_empty() {
        return Err(PathError::Invalid("empty segment"));
    }
    if segment == "." || segment == ".." {
        return Err(PathError::Invalid("dot segment"));
    }
    if segment.chars().any(char::is_control) {
        return Err(PathError::Invalid("control character"));
    }
    if segment.contains('\\') {
        return Err(PathError::Invalid("backslash"));
    }
    Ok(segment)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<String, PathError> {
        SlotPath::parse(raw, "/upload/").map(|p| p.0)
    }

    #[test]
    fn decodes_once_in_either_case() {
        assert_eq!(
            parse("/upload/u/Gr%c3%bc%C3%9Fe%20(1).jpg").unwrap(),
            "u/Grüße (1).jpg"
        );
        assert_eq!(parse("/upload/u/50%25%2b+x").unwrap(), "u/50%++x");
        assert_eq!(parse("/upload/u/%2541").unwrap(), "u/%41");
    }

    #[test]
    fn refuses_what_cannot_be_a_slot() {
        for raw in [
            "/upload/a/../b",
            "/upload/a/%2e%2e/b",
            "/upload/a/%2E/b",
            "/upload/a/b%2fc",
            "/upload/a/b%2Fc",
            "/upload/a//b",
            "/upload/a/",
            "/upload//a",
            "/upload/a/%00b",
            "/upload/a/%ff",
            "/upload/a/%zz",
            "/upload/a/%4",
            "/upload/a/b%5cc",
        ] {
            assert!(
                matches!(parse(raw), Err(PathError::Invalid(_))),
                "{raw} must be refused"
            );
        }
        for raw in ["/upload/", "/uploads/a", "/a/b", "/upload"] {
            assert_eq!(parse(raw), Err(PathError::OutsideBase), "{raw}");
        }
    }

    #[test]
    fn segments() {
        let p = SlotPath::parse("/upload/slot/dir/name.txt", "/upload/").unwrap();
        assert_eq!(p.first_segment(), "slot");
        assert_eq!(p.file_name(), "name.txt");
    }

    #[test]
    fn encode_round_trips() {
        let s = "u/Grüße 2026 (1)+50%.jpg";
        let raw = format!("/upload/{}", SlotPath::encode(s));
        assert_eq!(parse(&raw).unwrap(), s);
    }
}
