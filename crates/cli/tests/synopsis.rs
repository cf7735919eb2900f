//! The user guide's CLI synopsis (`docs/cli.md`) matches the binary: every subcommand (at any depth) and every long
//! flag the real `metaprompt` shows in its `--help` appears in its "## CLI" section, so
//! the two cannot drift apart again. And `config show` says where the library and the models are.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{metaprompt, stdout};

/// `metaprompt PATH… --help`.
fn help(path: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_metaprompt"))
        .args(path)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{path:?} --help: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The section of a help text that starts with `title` (`Commands:`, `Options:`), up to the next
/// blank line followed by an unindented line.
fn section<'a>(text: &'a str, title: &str) -> Vec<&'a str> {
    let mut lines = text.lines().skip_while(|l| *l != title);
    lines.next();
    let mut out = Vec::new();
    for line in lines {
        if !line.is_empty() && !line.starts_with(' ') {
            break;
        }
        out.push(line);
    }
    out
}

/// The subcommands a help text lists (`help` left out).
fn subcommands(text: &str) -> Vec<String> {
    section(text, "Commands:")
        .into_iter()
        // An entry is indented by two spaces; its wrapped description by more.
        .filter_map(|l| l.strip_prefix("  ").filter(|r| !r.starts_with(' ')))
        .filter_map(|r| r.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(String::from)
        .collect()
}

/// The long flags a help text lists (`--help` and `--version` left out): an option line is
/// `  -x, --name` or `      --name`; a wrapped description (indented further) never counts.
fn long_flags(text: &str) -> Vec<String> {
    section(text, "Options:")
        .into_iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("  ")?;
            let rest = match rest.strip_prefix("    ") {
                Some(r) => r,
                None => {
                    let mut c = rest.chars();
                    match (c.next(), c.next(), c.next(), c.next()) {
                        (Some('-'), Some(x), Some(','), Some(' ')) if x.is_alphanumeric() => {
                            &rest[4..]
                        }
                        _ => return None,
                    }
                }
            };
            let name = rest.strip_prefix("--")?;
            let end = name
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(name.len());
            Some(format!("--{}", &name[..end]))
        })
        .filter(|f| f != "--help" && f != "--version")
        .collect()
}

/// Every command path of the binary (`["prompts", "add"]`…), depth first, with its help text.
fn commands() -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(path) = todo.pop() {
        let text = help(&path);
        for sub in subcommands(&text) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        out.push((path, text));
    }
    out
}

/// The user guide's "## CLI" section (`docs/cli.md`).
fn readme_cli() -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let start = text
        .find("\n## CLI\n")
        .expect("docs/cli.md has a `## CLI` section");
    let rest = &text[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    rest[..end].to_string()
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Whether `word` occurs in `text` as a whole word (`--max-meta` is not in `--max-meta-tokens`).
fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
    })
}

/// Whether the synopsis documents the command `path`: a line that starts with its top-level
/// name (after indentation) and names each deeper subcommand as a word (`prompts list | show
/// REF | log NAME` documents `prompts show`).
fn documents(cli: &str, path: &[String]) -> bool {
    cli.lines().any(|line| {
        let trimmed = line.trim_start();
        trimmed
            .split_whitespace()
            .next()
            .is_some_and(|first| first == path[0])
            && path[1..].iter().all(|w| has_word(trimmed, w))
    })
}

#[test]
fn the_readme_cli_synopsis_names_every_subcommand_and_long_flag_of_the_binary() {
    let cli = readme_cli();
    let commands = commands();
    assert!(
        commands.len() > 20,
        "the help parser found too few commands: {commands:?}"
    );
    let mut missing_commands = Vec::new();
    let mut flags = BTreeSet::new();
    for (path, text) in &commands {
        if !path.is_empty() && !documents(&cli, path) {
            missing_commands.push(path.join(" "));
        }
        flags.extend(long_flags(text));
    }
    assert!(
        flags.contains("--listen") && flags.contains("--proxy") && flags.contains("--library"),
        "the help parser missed flags: {flags:?}"
    );
    let missing_flags: Vec<&String> = flags.iter().filter(|f| !has_word(&cli, f)).collect();
    assert!(
        missing_commands.is_empty() && missing_flags.is_empty(),
        "docs/cli.md's `## CLI` synopsis lacks what `metaprompt --help` shows:\n\
         commands: {missing_commands:?}\nlong flags: {missing_flags:?}"
    );
}

#[test]
fn the_help_parser_reads_clap_layouts() {
    let short = "Usage: x\n\nCommands:\n  add   Add a\n        wrapped --not-a-flag\n  help  Print\n\n\
                 Options:\n  -m, --model <MODEL>  The model\n                       --wrapped\n      \
                 --json               JSON\n  -h, --help  Print help\n";
    assert_eq!(subcommands(short), ["add"]);
    assert_eq!(long_flags(short), ["--model", "--json"]);
    let long = "Options:\n  -a, --algo <ALGO>\n          The algorithm\n          --max-meta-tokens \
                is given]\n      --proxy\n          ape\n";
    assert_eq!(long_flags(long), ["--algo", "--proxy"]);
    assert!(has_word("[--max-meta-tokens N]", "--max-meta-tokens"));
    assert!(!has_word("[--max-meta-tokens N]", "--max-meta"));
    let cli = "  prompts list | show REF | log NAME\n  review approve REF";
    assert!(documents(cli, &["prompts".into(), "show".into()]));
    assert!(!documents(cli, &["prompts".into(), "add".into()]));
    assert!(!documents(cli, &["approve".into()]));
}

#[tokio::test(flavor = "multi_thread")]
async fn config_show_names_the_library_file_and_the_models_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lib = d.join("lib.db");
    let models = d.join("models");
    let out = metaprompt(
        d,
        &["config", "show"],
        &[
            ("METAPROMPT_LIBRARY", lib.to_str().unwrap()),
            ("METAPROMPT_MODELS_DIR", models.to_str().unwrap()),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "library   {} (--library or METAPROMPT_LIBRARY, not created yet)",
            lib.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "model dir {} (METAPROMPT_MODELS_DIR, not created yet)",
            models.display()
        )),
        "{text}"
    );
    // From the config file, once they exist.
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(&lib, "").unwrap();
    std::fs::write(
        d.join("metaprompt.toml"),
        format!(
            "[library]\npath = {:?}\n[local]\nmodels_dir = {:?}\n",
            lib.display().to_string(),
            models.display().to_string()
        ),
    )
    .unwrap();
    let out = metaprompt(d, &["config", "show"], &[]).await;
    let text = stdout(&out);
    assert!(
        text.contains(&format!("library   {} ([library] path)", lib.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "model dir {} ([local] models_dir)",
            models.display()
        )),
        "{text}"
    );
}
