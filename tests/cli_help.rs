//! The command line explains itself: every subcommand, flag and argument has
//! help text, and the man pages and shell completions shipped in deploy/ (and
//! in the Debian package) are the ones the binary generates today.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_upslot");
const REGENERATE: &str = "regenerate with: cargo build && target/debug/upslot man --dir deploy/man \
     && for s in bash:upslot.bash zsh:_upslot fish:upslot.fish; do \
     target/debug/upslot completions ${s%%:*} > deploy/completions/${s#*:}; done";

/// Every command below `cmd`, with its full name (`upslot files export`).
fn walk(cmd: &clap::Command, name: String, out: &mut Vec<(String, clap::Command)>) {
    for sub in cmd.get_subcommands() {
        walk(sub, format!("{name} {}", sub.get_name()), out);
    }
    out.push((name, cmd.clone()));
}

#[test]
fn every_command_flag_and_argument_has_help() {
    let mut root = upslot::cli::command();
    root.build();
    let mut commands = Vec::new();
    walk(&root, "upslot".into(), &mut commands);
    let mut missing = Vec::new();
    let mut args = 0;
    for (name, cmd) in &commands {
        if cmd.get_about().is_none() {
            missing.push(name.clone());
        }
        for arg in cmd.get_arguments() {
            args += 1;
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{name} {}", arg.get_id()));
            }
        }
    }
    assert!(missing.is_empty(), "no help text: {missing:?}");
    // The walk saw the tree, not an empty one.
    assert!(
        commands.len() >= 14 && args >= 40,
        "{} commands, {args} arguments",
        commands.len()
    );
    root.debug_assert();
}

fn run(args: &[&str]) -> Vec<u8> {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "upslot {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn read_dir(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn shipped_man_pages_are_the_generated_ones() {
    let dir = tempfile::tempdir().unwrap();
    run(&["man", "--dir", dir.path().to_str().unwrap()]);
    let generated = read_dir(dir.path());
    let shipped = read_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/man"));
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        shipped.keys().collect::<Vec<_>>(),
        "{REGENERATE}"
    );
    for (name, page) in &generated {
        assert!(
            shipped[name] == *page,
            "deploy/man/{name} is stale; {REGENERATE}"
        );
    }
    // `upslot man` alone prints the top page, which lists every subcommand.
    let top = String::from_utf8(run(&["man"])).unwrap();
    assert_eq!(top.as_bytes(), &generated["upslot.1"][..]);
    for sub in [
        "serve",
        "sign",
        "check\\-config",
        "files",
        "migrate",
        "completions",
    ] {
        assert!(top.contains(sub), "upslot.1 lacks {sub}");
    }
}

#[test]
fn shipped_completions_are_the_generated_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/completions");
    for (shell, file) in [
        ("bash", "upslot.bash"),
        ("zsh", "_upslot"),
        ("fish", "upslot.fish"),
    ] {
        let shipped = std::fs::read(root.join(file)).unwrap();
        assert!(
            run(&["completions", shell]) == shipped,
            "deploy/completions/{file} is stale; {REGENERATE}"
        );
    }
}

/// The bash script, loaded into a real bash, completes subcommands and flags.
#[test]
fn bash_completes_subcommands_and_flags() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/completions/upslot.bash");
    let complete = |words: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source '{}'; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                 _upslot upslot \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; echo \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(complete("upslot fi").trim(), "files");
    let flags = complete("upslot files export --");
    for flag in ["--user", "--archive", "--config", "--by-node"] {
        assert!(
            flags.split_whitespace().any(|f| f == flag),
            "{flag} not in {flags}"
        );
    }
}
