//! The `upslot` command: parse the command line, load configuration, start
//! logging, and hand over to the library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::signal::unix::{Signal, SignalKind, signal};
use upslot::auth::{JwtSlot, Scheme, sign_jwt, sign_query};
use upslot::cli::{Cli, Command, FilesAction, IndexAction};
use upslot::clock::{Clock, SystemClock};
use upslot::config::Config;
use upslot::hints;
use upslot::path::SlotPath;
use upslot::secret::{Origin, Secret};

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { config } => serve(load(config.config.as_ref())?, config.config),
        Command::Sign {
            config,
            scheme,
            size,
            content_type,
            base_url,
            user,
            path,
        } => {
            let config = load(config.config.as_ref())?;
            let scheme: Scheme = scheme
                .parse()
                .map_err(|()| anyhow::anyhow!("unknown scheme {scheme:?}: v1, v2, token, jwt"))?;
            sign(&config, scheme, size, content_type, base_url, user, path)
        }
        Command::Files { config, action } => files(&load(config.config.as_ref())?, action),
        Command::Index {
            config,
            action: IndexAction::Rebuild,
        } => rebuild(&load(config.config.as_ref())?),
        Command::Completions { shell } => {
            upslot::cli::completions(shell, &mut std::io::stdout().lock());
            Ok(())
        }
        Command::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            upslot::cli::man_pages(&dir)
                .with_context(|| format!("cannot write into {}", dir.display()))
        }
        Command::Man { dir: None } => Ok(upslot::cli::man_page(&mut std::io::stdout().lock())?),
        Command::Migrate { config, from } => migrate(&Config::load(&config)?, &from),
        Command::CheckConfig { file } => {
            let config = Config::load(&file)?;
            // As `serve` would at start: readable, parseable, key matching.
            if let Some(tls) = &config.tls {
                upslot::tls::check(tls)?;
                println!(
                    "tls: ok ({} with {})",
                    tls.cert_file.display(),
                    tls.key_file.display()
                );
            }
            println!(
                "{}: ok (listen {}, base_path {}, data_dir {})",
                file.display(),
                config.listen,
                config.base_path,
                config.data_dir.display()
            );
            Ok(())
        }
    }
}

#[tokio::main]
async fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    upslot::telemetry::init(config.log_format);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let bound = listener.local_addr()?;
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} ([admin] listen)", config.admin_listen))?;
    let admin_bound = admin.local_addr()?;
    let shutdown = shutdown_signal()?;
    let hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let service = upslot::Service::open(config, std::sync::Arc::new(SystemClock))
        .await?
        .with_admin(admin);
    tokio::spawn(reload_on_hangup(
        hangup,
        path,
        service.secrets_reloader(),
        service.tls_reloader(),
    ));
    let config = service.config();
    let base_url = hints::base_url(config, bound);
    match &service.secret().origin {
        Origin::Generated(path) => {
            tracing::info!(path = %path.display(), "generated a new secret")
        }
        Origin::File(path) => tracing::info!(path = %path.display(), "secret read from file"),
        Origin::Env => tracing::info!("secret taken from UPSLOT_SECRET"),
        Origin::Config => tracing::info!("secret taken from the configuration"),
    }
    // The secret goes to a terminal only, never into a log that outlives it.
    let shown = if std::io::stdout().is_terminal() {
        service.secret().text().to_owned()
    } else {
        "<the secret; see the log line above>".to_owned()
    };
    let banner = format!(
        "upslot listening on {base_url}\n\nPaste into your XMPP server (with your public https URL):\n\n{}",
        hints::xmpp_snippets(config, &base_url, &shown)
    );
    // A closed stdout must not stop the service: the banner is a courtesy.
    let _ = writeln!(std::io::stdout().lock(), "{banner}");
    tracing::info!(listen = %bound, admin = %admin_bound, "listening");
    service.serve(listener, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP re-reads the secrets (current and previous, from the configuration
/// file, `UPSLOT_SECRET` or the files they name) and the certificate (certbot's
/// deploy hook sends it). Any other change to the file needs a restart.
async fn reload_on_hangup(
    mut hangup: Signal,
    path: Option<PathBuf>,
    secrets: upslot::SecretsReloader,
    tls: Option<upslot::tls::Reloader>,
) {
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the secrets and the certificate");
        let path = path.clone();
        let secrets = secrets.clone();
        let reloaded = tokio::task::spawn_blocking(move || {
            let config = load(path.as_ref())?;
            Ok::<_, anyhow::Error>(secrets.reload(&config)?)
        })
        .await;
        match reloaded {
            Ok(Ok(previous)) => tracing::info!(previous, "secrets reloaded"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "secrets not reloaded; the old ones stay in effect")
            }
            Err(e) => tracing::error!(error = %e, "secrets not reloaded"),
        }
        if let Some(reloader) = tls.clone() {
            // reload() reads files and logs its own outcome.
            let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
        }
    }
}

/// Registers for SIGTERM and SIGINT at once (so a signal that arrives right after
/// start-up is not fatal) and returns a future that resolves on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

fn sign(
    config: &Config,
    scheme: Scheme,
    size: u64,
    content_type: Option<String>,
    base_url: Option<String>,
    user: Option<String>,
    path: String,
) -> anyhow::Result<()> {
    let secret = Secret::resolve(config, false).context(
        "no secret: set one in the configuration or UPSLOT_SECRET, or run `upslot serve` once",
    )?;
    let path = if path.contains('/') {
        path.trim_start_matches('/').to_owned()
    } else {
        format!(
            "{:016x}{:016x}/{path}",
            rand::random::<u64>(),
            rand::random::<u64>()
        )
    };
    let base_url = base_url.unwrap_or_else(|| hints::base_url(config, config.listen));
    let base_url = if base_url.ends_with('/') {
        base_url
    } else {
        format!("{base_url}/")
    };
    let url = format!("{base_url}{}", SlotPath::encode(&path));
    let check = SlotPath::parse(&format!("/{}", SlotPath::encode(&path)), "/")
        .map_err(|e| anyhow::anyhow!("{path:?} cannot be a slot path: {e}"))?;
    match scheme {
        Scheme::Jwt => {
            let now = SystemClock.unix();
            let claims = JwtSlot {
                slot: check.first_segment().to_owned(),
                filesize: size,
                exp: now + 300,
                iat: Some(now),
                filename: Some(check.file_name().to_owned()),
                filetype: content_type,
                sub: user,
                expires: None,
            };
            let token = sign_jwt(secret.as_bytes(), &claims)?;
            println!("{url}");
            println!("Authorization: Bearer {token}");
        }
        _ => {
            let Some(query) = sign_query(
                scheme,
                secret.as_bytes(),
                &path,
                size,
                content_type.as_deref(),
            ) else {
                bail!("cannot sign {scheme}");
            };
            println!("{url}?{query}");
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn rebuild(config: &Config) -> anyhow::Result<()> {
    use upslot::catalog::{Catalog, Opener};
    upslot::telemetry::init(config.log_format);
    if config.index == upslot::config::IndexBackend::Local {
        bail!("the embedded index is rebuilt from the store at every start: nothing to do");
    }
    let (catalog, _) = Catalog::open(config, Opener::Command, SystemClock.unix()).await?;
    let (recorded, present) = upslot::migrate::rebuild(&catalog).await?;
    println!("recorded {recorded} file(s); {present} already in the index");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn migrate(config: &Config, from: &std::path::Path) -> anyhow::Result<()> {
    use upslot::catalog::{Catalog, Opener};
    upslot::telemetry::init(config.log_format);
    if config.storage == upslot::config::Storage::Fs {
        bail!(
            "the configuration names local storage: migrate copies into [storage] backend = \"s3\""
        );
    }
    let source = upslot::store::FsStore::attach(from)?;
    let (catalog, _) = Catalog::open(config, Opener::Command, SystemClock.unix()).await?;
    let moved = upslot::migrate::run(&source, &catalog, SystemClock.unix()).await?;
    println!(
        "copied {} file(s) ({} bytes); {} already there; {} expired, left behind; {} refused (see the log)",
        moved.copied, moved.bytes, moved.present, moved.expired, moved.refused
    );
    if moved.refused > 0 {
        bail!("{} file(s) were not copied", moved.refused);
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn files(config: &Config, action: FilesAction) -> anyhow::Result<()> {
    use upslot::catalog::{Catalog, Opener};
    use upslot::files;
    if let FilesAction::Export {
        archive: Some(target),
        ..
    } = &action
    {
        // Before anything is read: an existing file is never overwritten.
        files::archive::refuse_existing(target)?;
    }
    let (catalog, _) = Catalog::open(config, Opener::Command, SystemClock.unix()).await?;
    let index = &*catalog.index;
    let mut out = std::io::stdout().lock();
    match action {
        FilesAction::List { who, json } => {
            let list = files::list(index, who.user.as_deref(), who.by_node.matching()).await?;
            if json {
                let list: Vec<files::ExportedFile> = list.iter().map(Into::into).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                write!(out, "{}", files::table(&list))?;
            }
        }
        FilesAction::Show { path } => {
            let path = files::signed_path(&path, &config.base_path).map_err(anyhow::Error::msg)?;
            let key = upslot::store::Key::for_path(&path);
            let Some(meta) = index.get(&key).await? else {
                bail!("no file at {path}");
            };
            let shown = files::ExportedFile::from(&*meta);
            writeln!(out, "{}", serde_json::to_string_pretty(&shown)?)?;
        }
        FilesAction::Export {
            user,
            by_node,
            archive: Some(target),
        } => {
            let list = files::list(index, Some(&user), by_node.matching()).await?;
            let store = std::sync::Arc::clone(&catalog.store);
            let done =
                files::archive::write(store, &user, SystemClock.unix(), list, &target).await?;
            writeln!(
                out,
                "wrote {}: {} file(s), {} (archive {})",
                target.display(),
                done.files,
                bytesize::ByteSize(done.bytes).display().si(),
                bytesize::ByteSize(done.archive_bytes).display().si()
            )?;
        }
        FilesAction::Export {
            user,
            by_node,
            archive: None,
        } => {
            let list = files::list(index, Some(&user), by_node.matching()).await?;
            let export = files::Export {
                user: &user,
                exported_at: files::rfc3339(SystemClock.unix()),
                files: list.iter().map(Into::into).collect(),
            };
            writeln!(out, "{}", serde_json::to_string_pretty(&export)?)?;
        }
        FilesAction::Delete {
            user,
            by_node,
            paths,
        } => {
            let paths = match user {
                Some(user) => files::list(index, Some(&user), by_node.matching())
                    .await?
                    .into_iter()
                    .map(|m| m.path)
                    .collect(),
                None => paths
                    .iter()
                    .map(|p| files::signed_path(p, &config.base_path))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(anyhow::Error::msg)?,
            };
            if config.index != upslot::config::IndexBackend::Local {
                // The shared index is every instance's: done once it returns.
                let removed = files::delete(&catalog, &paths).await?;
                writeln!(out, "deleted {} file(s)", removed.len())?;
                return Ok(());
            }
            let (removed, told) =
                files::delete_and_notify(&catalog, &config.data_dir, &paths).await?;
            writeln!(out, "deleted {} file(s)", removed.len())?;
            match told {
                Ok(true) => {}
                Ok(false) if removed.is_empty() => {}
                Ok(false) => writeln!(
                    out,
                    "(no service running; it will count them at its next start)"
                )?,
                Err(e) => bail!(
                    "the files are deleted, but the running service was not told ({e}): \
                     its usage and quotas count them until it restarts"
                ),
            }
        }
    }
    Ok(())
}
