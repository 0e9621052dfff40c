//! The lines an operator pastes into Prosody or ejabberd, printed by `upslot serve`
//! and matching `deploy/`.

use crate::config::Config;

/// The URL of the upload area at `addr` when nothing better is known.
pub fn base_url(config: &Config, addr: std::net::SocketAddr) -> String {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{addr}{}", config.base_path)
}

pub fn xmpp_snippets(config: &Config, base_url: &str, secret: &str) -> String {
    let limit = config.max_file_size;
    let days = config.retention.as_secs() / 86_400;
    let expires = config.retention.as_secs();
    let ejabberd_put = base_url.trim_end_matches('/');
    format!(
        r#"-- Prosody, mod_http_upload_external (prosody-modules), protocol v1 or v2:
Component "upload.example.org" "http_upload_external"
    http_upload_external_base_url = "{base_url}"
    http_upload_external_secret = "{secret}"
    http_upload_external_file_size_limit = {limit}
    -- http_upload_external_protocol = "v2"

-- Prosody 0.12+, mod_http_file_share in external mode:
Component "share.example.org" "http_file_share"
    http_file_share_base_url = "{base_url}"
    http_file_share_secret = "{secret}"
    http_file_share_size_limit = {limit}
    http_file_share_expires_after = {expires} -- {days} days, as upslot keeps files

# ejabberd, modules: section
  mod_http_upload:
    put_url: "{ejabberd_put}"
    get_url: "{ejabberd_put}"
    external_secret: "{secret}"
    max_size: {limit}
"#
    )
}
