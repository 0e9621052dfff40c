//! The metadata a file will carry once complete: what the slot signed, what the
//! client sent, and what the service decides (expiry, type, uploader).

use crate::app::App;
use crate::auth::Grant;
use crate::path::SlotPath;
use crate::store::Meta;

/// The metadata of an upload (its hash is filled in once the body is in).
pub fn describe(
    app: &App,
    path: &SlotPath,
    grant: &Grant,
    sent_type: Option<&str>,
    now: u64,
) -> Meta {
    let retention_end = now.saturating_add(app.config.retention.as_secs());
    let expires = grant
        .expires
        .map_or(retention_end, |e| e.min(retention_end));
    let content_type = grant
        .signed_type
        .as_deref()
        .or(sent_type)
        .filter(|t| t.parse::<mime::Mime>().is_ok())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            mime_guess::from_path(path.file_name())
                .first_or_octet_stream()
                .to_string()
        });
    Meta {
        path: path.as_str().to_owned(),
        name: path.file_name().to_owned(),
        size: grant.size,
        content_type,
        sha256: String::new(),
        created: now,
        expires,
        scheme: grant.scheme,
        uploader: grant.uploader.clone().or_else(|| ejabberd_user(path)),
        object: app
            .catalog
            .store
            .new_object(&crate::store::Key::for_path(path.as_str())),
    }
}

/// ejabberd's slots are `<user>/<40 random alphanumerics>/<name>`, where `<user>`
/// is the SHA-1 of the bare JID or its node: the uploader, for quotas and `files`.
fn ejabberd_user(path: &SlotPath) -> Option<String> {
    let mut segments = path.as_str().split('/');
    let (user, random, _name) = (segments.next()?, segments.next()?, segments.next()?);
    let looks_random = random.len() == 40 && random.bytes().all(|b| b.is_ascii_alphanumeric());
    (segments.next().is_none() && looks_random).then(|| user.to_owned())
}
