//! The fuzz targets' checks (fuzz/src), compiled into `cargo test`: every input
//! the fuzzers once crashed on stays here inline, and every seed of the committed
//! corpus (fuzz/corpus/<target>/) is replayed, so neither needs a nightly toolchain.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../fuzz/src/client_ip.rs"]
mod client_ip;
#[path = "../fuzz/src/conditional.rs"]
mod conditional;
#[path = "../fuzz/src/config.rs"]
mod config;
#[path = "../fuzz/src/disposition.rs"]
mod disposition;
#[path = "../fuzz/src/input.rs"]
mod input;
#[path = "../fuzz/src/jwt.rs"]
mod jwt;
#[path = "../fuzz/src/path.rs"]
mod path;
#[path = "../fuzz/src/query_token.rs"]
mod query_token;
#[path = "../fuzz/src/range.rs"]
mod range;

/// A target's check: panics on an input that breaks an invariant.
type Check = fn(&[u8]);

const TARGETS: &[(&str, Check)] = &[
    ("client_ip", client_ip::check),
    ("conditional", conditional::check),
    ("config", config::check),
    ("disposition", disposition::check),
    ("jwt", jwt::check),
    ("path", path::check),
    ("query_token", query_token::check),
    ("range", range::check),
];

#[test]
fn every_committed_seed_passes_its_check() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, check) in TARGETS {
        let mut seeds = 0;
        for entry in std::fs::read_dir(corpus.join(target)).unwrap() {
            let seed = entry.unwrap().path();
            let data = std::fs::read(&seed).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: seed {} fails", seed.display());
            seeds += 1;
        }
        assert!(seeds >= 5, "{target}: only {seeds} seeds");
    }
}

/// `headers` 0.4 debug-asserts that an entity-tag holds no whitespace, which
/// panicked on this If-Match in debug builds; src/http/conditional.rs now drops
/// such tags (they match nothing).
#[test]
fn conditional_if_match_tag_with_a_space() {
    conditional::check(
        b"if-match: W/\"9f86d081884c7d659a2feaa0c55ad00c55ad01tch: W/\"9f86d0818845\"15\"",
    );
    conditional::check(b"if-none-match: \"a b\", \"9f86d081884c7d659a2feaa0c55ad015\"");
    conditional::check(b"if-range: \"9f86d081884c7d659a2feaa0c55ad015 \"");
}

/// Then two If-None-Match lines, the first malformed: `headers` reads the lines as
/// one list, so the second must not be left behind a quote the first opened.
#[test]
fn conditional_two_if_none_match_lines() {
    conditional::check(
        b"if\xadf\xadmatch: \"x\"\nif-none-match: \"9f86d081884c7d329a2feaa0]cmatch: \"x\"\n\
          if-none-match: \"9f86d081884c7d329a2feaa0]c55ad015\"",
    );
    conditional::check(
        b"if-none-match: \"a b\"\nif-none-match: \"9f86d081884c7d659a2feaa0c55ad015\"",
    );
}
