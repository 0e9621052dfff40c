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
