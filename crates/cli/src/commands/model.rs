//! `metaprompt model pull|list`: the embedded models.

use crate::format::outln;
use anyhow::Context as _;
use metaprompt_local::LocalOptions;
use metaprompt_local::fetch::{self, DEFAULT_MODEL};

use crate::args::{Global, ModelCommand};
use crate::{context, format, progress};

pub async fn run(global: &Global, cmd: ModelCommand) -> anyhow::Result<()> {
    let config = context::load_config(global)?;
    let options = LocalOptions::from_config(&config);
    match cmd {
        ModelCommand::Pull {
            target,
            sha256,
            force,
        } => {
            let target = target.unwrap_or_else(|| DEFAULT_MODEL.to_string());
            let path = tokio::task::spawn_blocking(move || {
                pull(&options, &target, sha256.as_deref(), force)
            })
            .await
            .context("the pull was interrupted")??;
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            outln!(
                "ready: {} ({}, sha256 verified)",
                path.display(),
                format::bytes(size)
            );
        }
        ModelCommand::List => {
            outln!("models directory: {}", options.models_dir.display());
            outln!("{}", metaprompt_local::cpu::describe());
            let models = fetch::list(&options.catalog, &options.models_dir);
            let width = models.iter().map(|m| m.name.len()).max().unwrap_or(0);
            for m in models {
                let state = if m.present { "pulled" } else { "not pulled" };
                outln!(
                    "  {:<width$} {:<11} {:>9}  {}",
                    m.name,
                    state,
                    format::bytes(m.size),
                    m.description
                );
            }
            outln!("use one as `local:NAME`, or any file as `local:/path/to/model.gguf`");
        }
    }
    Ok(())
}

fn pull(
    options: &LocalOptions,
    target: &str,
    sha256: Option<&str>,
    force: bool,
) -> anyhow::Result<std::path::PathBuf> {
    let bar = progress::Bar::new();
    if target.starts_with("https://") || target.starts_with("http://") {
        let sha = sha256
            .context("a model pulled from a URL needs --sha256 HEX (its expected checksum)")?;
        return Ok(fetch::pull_url(target, sha, &options.models_dir, &bar)?);
    }
    if let Some((name, m)) = fetch::known(&options.catalog, target) {
        return Ok(fetch::pull_known(
            name,
            m,
            &options.models_dir,
            &options.python,
            force,
            &bar,
        )?);
    }
    let path = std::path::Path::new(target);
    if path.is_file() {
        match sha256 {
            Some(sha) => fetch::verify(path, &sha.trim().to_ascii_lowercase(), &bar)?,
            None => anyhow::bail!(
                "{target} is a local file: nothing to pull (pass --sha256 HEX to verify it); use it as `local:{target}`"
            ),
        }
        return Ok(path.to_path_buf());
    }
    Err(fetch::unknown(&options.catalog, target).into())
}
