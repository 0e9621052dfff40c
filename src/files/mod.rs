//! The data-subject tools behind `upslot files`: list, show, export and delete
//! files, by path or by uploader. They act on the store and index directly, so
//! they take effect at once whether or not the service runs. With an embedded
//! index the command holds its own copy, read from the store; a running service
//! hears of deletions through [`crate::control`] so that its index follows.

pub mod archive;

use std::io;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::catalog::{Catalog, RemoveError};
use crate::index::{Index, IndexError};
use crate::path::SlotPath;
use crate::store::{Key, Meta};

/// Which uploads `--user` finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// The bare JID (Prosody's JWT `sub`), or its SHA-1 (ejabberd's default
    /// path): nobody else's.
    Jid,
    /// Also uploads whose ejabberd path names only the JID's node
    /// (`jid_in_url: node`). On a server with several domains these may be
    /// another domain's user's, so only when asked.
    JidOrNode,
}

/// Does `meta` belong to `jid`?
pub fn belongs_to(meta: &Meta, jid: &str, how: Match) -> bool {
    let Some(uploader) = meta.uploader.as_deref() else {
        return false;
    };
    let bare = bare_jid(jid);
    if uploader.eq_ignore_ascii_case(&bare) {
        return true;
    }
    if uploader.eq_ignore_ascii_case(&hex::encode(Sha1::digest(bare.as_bytes()))) {
        return true;
    }
    match bare.split_once('@') {
        Some((node, _)) if how == Match::JidOrNode => uploader.eq_ignore_ascii_case(node),
        _ => false,
    }
}

/// `Alice@Example.org/phone` → `alice@example.org`.
fn bare_jid(jid: &str) -> String {
    jid.split('/').next().unwrap_or(jid).to_lowercase()
}

/// The signed path named by an argument: a full URL, a request path below
/// `base_path`, or the signed path itself.
pub fn signed_path(arg: &str, base_path: &str) -> Result<String, String> {
    let arg = arg.split(['?', '#']).next().unwrap_or(arg);
    let request_path = match arg.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => arg,
    };
    if request_path.starts_with(base_path) {
        SlotPath::parse(request_path, base_path)
            .map(|p| p.as_str().to_owned())
            .map_err(|e| format!("{arg}: {e}"))
    } else if request_path.starts_with('/') {
        Err(format!("{arg}: not below {base_path}"))
    } else {
        Ok(request_path.to_owned())
    }
}

/// Every file, or every file of `user`, oldest first.
pub async fn list(
    index: &dyn Index,
    user: Option<&str>,
    how: Match,
) -> Result<Vec<Meta>, IndexError> {
    let mut files: Vec<Meta> = index
        .list()
        .await?
        .into_iter()
        .filter(|meta| user.is_none_or(|jid| belongs_to(meta, jid, how)))
        .map(|meta| Meta::clone(&meta))
        .collect();
    files.sort_by(|a, b| (a.created, &a.path).cmp(&(b.created, &b.path)));
    Ok(files)
}

/// Deletes the files at `paths`; returns the metadata of those it removed.
pub async fn delete(catalog: &Catalog, paths: &[String]) -> Result<Vec<Meta>, RemoveError> {
    let mut removed = Vec::new();
    for path in paths {
        if let Some(meta) = catalog.erase(&Key::for_path(path)).await? {
            removed.push(Meta::clone(&meta));
        }
    }
    Ok(removed)
}

/// What `files export` writes: every fact stored about a user's files.
#[derive(Debug, Serialize)]
pub struct Export<'a> {
    pub user: &'a str,
    pub exported_at: String,
    pub files: Vec<ExportedFile>,
}

#[derive(Debug, Serialize)]
pub struct ExportedFile {
    pub path: String,
    pub name: String,
    pub size: u64,
    #[serde(rename = "type")]
    pub content_type: String,
    pub sha256: String,
    pub created: String,
    pub expires: String,
    pub scheme: String,
    pub uploader: Option<String>,
    /// The file's name inside an `--archive` (see [`archive`]); only there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_name: Option<String>,
}

impl From<&Meta> for ExportedFile {
    fn from(m: &Meta) -> Self {
        ExportedFile {
            path: m.path.clone(),
            name: m.name.clone(),
            size: m.size,
            content_type: m.content_type.clone(),
            sha256: m.sha256.clone(),
            created: rfc3339(m.created),
            expires: rfc3339(m.expires),
            scheme: m.scheme.to_string(),
            uploader: m.uploader.clone(),
            archive_name: None,
        }
    }
}

pub fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// One line per file for people: created, expires, size, type, uploader, path.
pub fn table(files: &[Meta]) -> String {
    let mut out = String::new();
    for m in files {
        out.push_str(&format!(
            "{}  {}  {:>12}  {:<24}  {:<24}  {}\n",
            rfc3339(m.created),
            rfc3339(m.expires),
            m.size,
            m.content_type,
            m.uploader.as_deref().unwrap_or("-"),
            m.path
        ));
    }
    out
}

/// `files delete` on an embedded index: removes from the store, then tells a
/// running service. The second value says whether one was running and heard;
/// its error, that telling it failed, after the files were already gone.
pub async fn delete_and_notify(
    catalog: &Catalog,
    data_dir: &Path,
    paths: &[String],
) -> Result<(Vec<Meta>, io::Result<bool>), RemoveError> {
    let removed = delete(catalog, paths).await?;
    let told = if removed.is_empty() {
        Ok(false)
    } else {
        crate::control::notify_removed(data_dir, &removed)
    };
    Ok((removed, told))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scheme;

    fn meta(uploader: Option<&str>) -> Meta {
        Meta {
            path: "a/b".into(),
            name: "b".into(),
            size: 1,
            content_type: "text/plain".into(),
            sha256: String::new(),
            created: 0,
            expires: 1,
            scheme: Scheme::V1,
            uploader: uploader.map(Into::into),
            object: String::new(),
        }
    }

    #[test]
    fn users_by_every_name_a_server_uses() {
        let jid = "romeo@montague.example";
        for how in [Match::Jid, Match::JidOrNode] {
            assert!(belongs_to(&meta(Some("romeo@montague.example")), jid, how));
            assert!(belongs_to(
                &meta(Some("romeo@montague.example")),
                "Romeo@Montague.example/phone",
                how
            ));
            // The ejabberd vector's user segment is SHA-1 of this JID.
            assert!(belongs_to(
                &meta(Some("a5018f8c277bc4e61647c7b631df1c57f1cd4628")),
                jid,
                how
            ));
            assert!(!belongs_to(&meta(Some("juliet@capulet.example")), jid, how));
            assert!(!belongs_to(&meta(Some("romeo@other.example")), jid, how));
            assert!(!belongs_to(&meta(None), jid, how));
        }
        // A bare node could be any domain's romeo: only when asked for.
        assert!(!belongs_to(&meta(Some("romeo")), jid, Match::Jid));
        assert!(belongs_to(&meta(Some("romeo")), jid, Match::JidOrNode));
    }

    #[test]
    fn paths_in_every_form() {
        let want = Ok("u/Grüße.txt".to_owned());
        assert_eq!(
            signed_path(
                "https://h.example/upload/u/Gr%C3%BC%C3%9Fe.txt?v=1",
                "/upload/"
            ),
            want
        );
        assert_eq!(
            signed_path("/upload/u/Gr%c3%bc%c3%9fe.txt", "/upload/"),
            want
        );
        assert_eq!(signed_path("u/Grüße.txt", "/upload/"), want);
        assert!(signed_path("/elsewhere/x", "/upload/").is_err());
        assert!(signed_path("/upload/a/../b", "/upload/").is_err());
    }
}
