//! The command line: every subcommand, flag and argument with its help text.
//! `main.rs` acts on it; the man pages and shell completions are generated
//! from it (`upslot man`, `upslot completions`), so they cannot disagree.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "upslot",
    version,
    about = "HTTP File Upload service for XMPP (XEP-0363)",
    long_about = "HTTP File Upload service for XMPP (XEP-0363).\n\n\
        An XMPP server (Prosody, ejabberd, Metronome) hands its users signed upload \
        URLs; upslot checks the signature, stores the file, serves it back with HEAD, \
        Range, conditional requests and CORS, and deletes it once it expires (7 days \
        by default).\n\n\
        Without a configuration file, `upslot serve` listens on 127.0.0.1:5050, \
        keeps files under ./upslot-data and generates its secret there.",
    after_help = "Every command that takes --config reads the same file as `serve`; \
        see /etc/upslot/upslot.toml (or deploy/upslot.toml) for every key."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The configuration file; the built-in defaults without one.
#[derive(Args, Clone)]
pub struct ConfigArg {
    /// Configuration file (TOML); without it, the built-in defaults.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the service (built-in defaults when no file is given).
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print a signed PUT URL (and, for jwt, the Authorization header).
    Sign {
        #[command(flatten)]
        config: ConfigArg,
        /// Signing scheme.
        #[arg(long, default_value = "v1", value_parser = ["v1", "v2", "token", "jwt"])]
        scheme: String,
        /// Size in bytes that the upload must have.
        #[arg(long, value_name = "BYTES")]
        size: u64,
        /// Content type to sign (v2, token) or announce (jwt).
        #[arg(long = "type", value_name = "MIME")]
        content_type: Option<String>,
        /// Public base URL [default: http://<listen><base_path>].
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        /// Uploader JID for the jwt `sub` claim.
        #[arg(long, value_name = "JID")]
        user: Option<String>,
        /// Path below base_path; a bare file name gets a random slot directory.
        path: String,
    },
    /// Validate a configuration file, as `serve` would read it at start.
    CheckConfig {
        /// The configuration file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Rebuild the index from the store alone (after losing the database).
    Index {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: IndexAction,
    },
    /// Copy an installation on one machine (its data directory) into the
    /// storage and index that the configuration names; run it again to resume.
    Migrate {
        /// The configuration of the new storage and index (s3 + postgres).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The old installation's data directory.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
    },
    /// See, export and erase stored files (works while the service runs).
    Files {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: FilesAction,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command into a
    /// directory.
    Man {
        /// Write upslot.1 and a page per subcommand (upslot-files-export.1, ...)
        /// here instead of printing upslot.1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum FilesAction {
    /// List files, oldest first.
    List {
        #[command(flatten)]
        who: Who,
        /// JSON instead of one line per file.
        #[arg(long)]
        json: bool,
    },
    /// Everything stored about one file (URL, request path or signed path).
    Show {
        /// The file's URL, its request path, or its signed path.
        path: String,
    },
    /// Every fact stored about a user's files, as JSON; with --archive, the
    /// files too.
    Export {
        /// The user (bare JID) whose files to export.
        #[arg(long, value_name = "JID")]
        user: String,
        #[command(flatten)]
        by_node: ByNode,
        /// Write a tar archive (.tar, or gzip-compressed for .tar.gz and .tgz)
        /// holding export.json and every file under files/; refuses to
        /// overwrite an existing file. Each file is checked against its stored
        /// SHA-256 while it is written.
        #[arg(long, value_name = "FILE")]
        archive: Option<PathBuf>,
    },
    /// Delete files by path, or all of a user's files.
    Delete {
        /// Delete every file of this user (bare JID).
        #[arg(long, value_name = "JID", conflicts_with = "paths")]
        user: Option<String>,
        #[command(flatten)]
        by_node: ByNode,
        /// The files' URLs, request paths or signed paths.
        #[arg(required_unless_present = "user")]
        paths: Vec<String>,
    },
}

/// `--user` for listing, with `--by-node`.
#[derive(Args)]
pub struct Who {
    /// Only this user's files (bare JID).
    #[arg(long, value_name = "JID")]
    pub user: Option<String>,
    #[command(flatten)]
    pub by_node: ByNode,
}

#[derive(Subcommand)]
pub enum IndexAction {
    /// Record every file the store holds that the index lacks.
    Rebuild,
}

#[derive(Args)]
pub struct ByNode {
    /// With --user: also uploads whose ejabberd URL names only the JID's node
    /// (`jid_in_url: node`), which on a server with several domains may be
    /// another domain's user's.
    #[arg(long, requires = "user")]
    pub by_node: bool,
}

impl ByNode {
    pub fn matching(&self) -> crate::files::Match {
        if self.by_node {
            crate::files::Match::JidOrNode
        } else {
            crate::files::Match::Jid
        }
    }
}

/// The command tree, for the man pages and completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut command(), "upslot", out);
}

/// The top-level manual page, as [`man_pages`] writes it (`help` is no page).
pub fn man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut cmd = command().disable_help_subcommand(true);
    cmd.build();
    clap_mangen::Man::new(cmd).render(out)
}

/// Writes upslot.1 and one page per subcommand into `dir`.
pub fn man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    clap_mangen::generate_to(command(), dir)
}
