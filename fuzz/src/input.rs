//! Fuzz inputs are text, one field a line, so that seeds can be written and read
//! by hand; a line that is not there is an absent field.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The fields of `data`, split at `\n`.
pub fn fields(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| *b == b'\n')
}

pub fn text(field: &[u8]) -> Option<&str> {
    std::str::from_utf8(field).ok()
}

/// The fields a slot check starts with: a request path below `/upload/` (the
/// input is skipped unless it parses), a token, a size and a content type; the
/// rest are left in the iterator for the caller.
pub struct Slot<'a> {
    pub path: upslot::path::SlotPath,
    pub token: Option<&'a str>,
    pub size: u64,
    pub content_type: Option<&'a str>,
}

pub fn slot<'a>(f: &mut impl Iterator<Item = &'a [u8]>) -> Option<Slot<'a>> {
    let path = upslot::path::SlotPath::parse(f.next().and_then(text)?, "/upload/").ok()?;
    let token = f.next().and_then(text);
    let size = f
        .next()
        .and_then(text)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = f.next().and_then(text);
    Some(Slot {
        path,
        token,
        size,
        content_type,
    })
}

/// Lines of the form `name: value`; those that are not a valid header are skipped,
/// as hyper would never hand them to us.
pub fn headers<'a>(lines: impl Iterator<Item = &'a [u8]>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            map.append(name, value);
        }
    }
    map
}
