//! The HMAC secret shared with the XMPP server: from `UPSLOT_SECRET`, the config
//! (`secret` or `secret_file`), or generated into `<data_dir>/secret` (mode 0600)
//! on first start so that the service runs with no configuration at all.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, SecretSource};

pub const ENV: &str = "UPSLOT_SECRET";
/// Shorter secrets are refused, wherever they come from.
pub const MIN_LEN: usize = 16;

pub struct Secret {
    text: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Env,
    Config,
    File(PathBuf),
    /// Created just now, at this path.
    Generated(PathBuf),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Secret {
    pub fn from_text(text: impl Into<String>) -> Secret {
        Secret {
            text: text.into(),
            origin: Origin::Config,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }

    /// The secret as the XMPP server's configuration must hold it.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Finds the secret; with `create`, generates `<data_dir>/secret` if nothing
    /// else provides one.
    pub fn resolve(config: &Config, create: bool) -> io::Result<Secret> {
        if let Ok(text) = std::env::var(ENV)
            && !text.is_empty()
        {
            if text.len() < MIN_LEN {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{ENV}: secret must be at least {MIN_LEN} characters"),
                ));
            }
            return Ok(Secret {
                text,
                origin: Origin::Env,
            });
        }
        match &config.secret {
            SecretSource::Inline(text) => Ok(Secret::from_text(text.clone())),
            SecretSource::File(path) => read(path).map(|text| Secret {
                text,
                origin: Origin::File(path.clone()),
            }),
            SecretSource::Generated => {
                let path = config.data_dir.join("secret");
                match read(&path) {
                    Ok(text) => Ok(Secret {
                        text,
                        origin: Origin::File(path),
                    }),
                    Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                        let text = generate(&path)?;
                        Ok(Secret {
                            text,
                            origin: Origin::Generated(path),
                        })
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }
}

/// The secrets from before a rotation, with their ends (Unix seconds), in the
/// order configured.
pub fn previous(config: &Config) -> io::Result<Vec<(Secret, u64)>> {
    config
        .previous_secrets
        .iter()
        .map(|p| {
            let secret = match &p.source {
                SecretSource::Inline(text) => Secret::from_text(text.clone()),
                SecretSource::File(path) => Secret {
                    text: read(path)?,
                    origin: Origin::File(path.clone()),
                },
                // Validation never makes one; nothing to read.
                SecretSource::Generated => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "previous_secrets: an entry without a secret",
                    ));
                }
            };
            Ok((secret, p.until))
        })
        .collect()
}

fn read(path: &Path) -> io::Result<String> {
    let text = fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let text = text.trim_end_matches(['\n', '\r']).to_owned();
    if text.len() < MIN_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: secret must be at least {MIN_LEN} characters",
                path.display()
            ),
        ));
    }
    Ok(text)
}

fn generate(path: &Path) -> io::Result<String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let text = hex::encode(rand::random::<[u8; 32]>());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(text)
}
