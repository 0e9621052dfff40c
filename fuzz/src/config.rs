//! `Config::parse` on any text: never a panic, and what it accepts obeys the rules
//! it checks (README "Configuration"), so the rest of the service can rely on them.

use upslot::config::{AllowOrigins, Config, SecretSource};

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::parse(text) {
        Ok(config) => config,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let base = &config.base_path;
    assert!(
        base.starts_with('/') && base.ends_with('/'),
        "base_path {base:?}"
    );
    assert!(
        base.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b)),
        "base_path {base:?}"
    );
    assert!(!config.data_dir.as_os_str().is_empty());
    if let SecretSource::Inline(secret) = &config.secret {
        assert!(secret.len() >= 16, "a short secret was accepted");
    }
    assert!(!config.schemes.is_empty());
    for (i, s) in config.schemes.iter().enumerate() {
        assert!(!config.schemes[..i].contains(s), "{s} listed twice");
    }
    assert!(config.max_file_size > 0);
    assert!(!config.retention.is_zero() && !config.reap_interval.is_zero());
    assert!(!config.idle_timeout.is_zero());
    for net in &config.trusted_proxies {
        assert_eq!(*net, net.trunc(), "{net} has host bits");
    }
    if let AllowOrigins::List(origins) = &config.allow_origins {
        for o in origins {
            assert!(
                (o.starts_with("https://") || o.starts_with("http://")) && !o.ends_with('/'),
                "origin {o:?}"
            );
            assert!(http::HeaderValue::from_str(o).is_ok(), "origin {o:?}");
        }
    }
    if let Some(tls) = &config.tls {
        assert!(!tls.cert_file.as_os_str().is_empty() && !tls.key_file.as_os_str().is_empty());
    }
    // Parsing is a function of the text alone.
    let again = Config::parse(text).expect("it parsed a moment ago");
    assert_eq!(format!("{again:?}"), format!("{config:?}"));
}
