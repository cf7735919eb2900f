//! The prompt library as the commands see it: where it is, who is acting, and how a command's
//! result becomes proposed versions.

use std::path::PathBuf;

use std::sync::Arc;

use metaprompt_engine::Stored;
use metaprompt_registry::model::short;
use metaprompt_registry::{Store, Version, VersionRef};

use crate::args::Global;
use crate::context;
use crate::format::outln;

/// The library file: flag/env, else config, else the user data directory.
pub fn path(global: &Global) -> anyhow::Result<PathBuf> {
    if let Some(p) = &global.library {
        return Ok(p.clone());
    }
    let config = context::load_config(global)?;
    Ok(config
        .library
        .path
        .clone()
        .unwrap_or_else(metaprompt_registry::default_path))
}

pub async fn open(global: &Global) -> anyhow::Result<Arc<dyn Store>> {
    Ok(metaprompt_registry::open(path(global)?).await?)
}

/// Who is acting: --author / METAPROMPT_AUTHOR, else $USER, else `unknown`.
pub fn author(global: &Global) -> String {
    global
        .author
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("USERNAME").ok())
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| "unknown".into())
}

pub async fn resolve(store: &dyn Store, reference: &str) -> anyhow::Result<Version> {
    Ok(store.resolve(&VersionRef::parse(reference)?).await?)
}

/// `sst2@v3 (3fa2c1d09e1b)`.
pub fn describe(v: &Version) -> String {
    format!("{} ({})", v.reference(), short(&v.hash))
}

/// Print what the library kept of a result and how to review it. With `json` (stdout holds a
/// JSON document) the lines go to standard error.
pub fn print_stored(stored: &Stored, json: bool) {
    print_stored_with(stored, json, false);
}

/// [`print_stored`]; `unscored`: the result was measured on nothing, so its proposal is marked
/// as having no evidence.
pub fn print_stored_with(stored: &Stored, json: bool, unscored: bool) {
    let say = |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            outln!("{line}");
        }
    };
    match stored {
        Stored::Off => say("library    not stored (--no-library)".into()),
        Stored::In { location, added } => {
            for a in added {
                let v = &a.version;
                let what = if a.created { "stored" } else { "already had" };
                // Only the proposal is the unmeasured one (a baseline is a person's version).
                let note = if unscored && v.origin.is_machine() {
                    " · no evidence (nothing was scored)"
                } else {
                    ""
                };
                say(format!(
                    "library    {what} {} · {} · {}{note}",
                    describe(v),
                    v.origin,
                    v.review
                ));
                if v.review == metaprompt_registry::ReviewState::Proposed {
                    say(format!(
                        "review     metaprompt review show {}",
                        v.reference()
                    ));
                }
            }
            say(format!("library    {location}"));
        }
    }
}
