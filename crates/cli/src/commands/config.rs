//! `metaprompt config show|model`.

use std::path::Path;

use crate::format::outln;
use metaprompt_llm::ProviderKind;
use metaprompt_local::LocalOptions;

use crate::args::{ConfigCommand, Global};
use crate::{context, format};

pub async fn run(global: &Global, cmd: ConfigCommand) -> anyhow::Result<()> {
    let config = context::load_config(global)?;
    match cmd {
        ConfigCommand::Show => {
            match &config.source {
                Some(p) => outln!("config    {}", p.display()),
                None => outln!("config    none found (built-in defaults)"),
            }
            match context::cache_disabled_by(global, &config) {
                Some(why) => outln!("cache     off ({why})"),
                None => outln!(
                    "cache     {}",
                    context::cache_path(global, &config)
                        .unwrap_or_default()
                        .display()
                ),
            }
            let library = crate::commands::library::path(global)?;
            let from = if global.library.is_some() {
                "--library or METAPROMPT_LIBRARY"
            } else if config.library.path.is_some() {
                "[library] path"
            } else {
                "default"
            };
            if global.no_library {
                outln!(
                    "library   off (--no-library); otherwise {}",
                    library.display()
                );
            } else {
                outln!(
                    "library   {} ({from}{})",
                    library.display(),
                    absent(&library)
                );
            }
            let models = LocalOptions::from_config(&config).models_dir;
            let from = if std::env::var_os("METAPROMPT_MODELS_DIR").is_some_and(|d| !d.is_empty()) {
                "METAPROMPT_MODELS_DIR"
            } else if config.local.models_dir.is_some() {
                "[local] models_dir"
            } else {
                "default"
            };
            outln!("model dir {} ({from}{})", models.display(), absent(&models));
            outln!("providers openai, anthropic, local (built in)");
            let env = |name: &str| std::env::var(name).ok();
            let mut names: Vec<&str> = vec!["openai", "anthropic"];
            names.extend(
                config
                    .providers
                    .keys()
                    .map(String::as_str)
                    .filter(|n| !matches!(*n, "openai" | "anthropic")),
            );
            for name in names {
                let kind = config
                    .providers
                    .get(name)
                    .and_then(|p| p.kind)
                    .map_or("built in", ProviderKind::as_str);
                match config.base_url_of(name, &env) {
                    Some((url, origin)) => {
                        outln!("  {name:<12} {kind:<10} {} (from {origin})", url.trim())
                    }
                    None => outln!("  {name:<12} {kind:<10} (no base URL)"),
                }
            }
            if !config.models.is_empty() {
                outln!("models");
                for name in config.models.keys() {
                    outln!("  {name}");
                }
            }
        }
        ConfigCommand::Model { spec } => {
            let hub = metaprompt_llm::Hub::new(config);
            let m = hub.resolve(&spec)?;
            outln!("name          {}", m.name);
            outln!("kind          {}", m.kind.as_str());
            outln!("model         {}", m.model);
            if !m.base_url.is_empty() {
                outln!("base_url      {}", m.base_url);
            }
            match &m.api_key_env {
                Some(var) => {
                    let set = std::env::var(var).is_ok_and(|v| !v.trim().is_empty());
                    outln!(
                        "api key       ${var} ({})",
                        if set { "set" } else { "NOT SET" }
                    );
                }
                None => outln!("api key       none sent"),
            }
            outln!(
                "format        {}",
                if m.format == metaprompt_llm::PromptFormat::Chat {
                    "chat"
                } else {
                    "text"
                }
            );
            match m.pricing {
                Some(p) => outln!(
                    "pricing       ${} in / ${} out per million tokens{}",
                    p.input_per_mtok,
                    p.output_per_mtok,
                    p.cached_input_per_mtok
                        .map(|c| format!(" (${c} cached input)"))
                        .unwrap_or_default()
                ),
                None => outln!(
                    "pricing       unknown (costs will show as unknown; set [models.\"{}\"].pricing)",
                    m.name
                ),
            }
            outln!("concurrency   {}", m.concurrency);
            outln!("timeout       {}", format::duration(m.timeout));
            outln!(
                "retries       {} (backoff from {})",
                m.retry.max_retries,
                format::duration(m.retry.base_delay)
            );
        }
    }
    Ok(())
}

/// `, not created yet` for a path that does not exist (the first use creates it).
fn absent(path: &Path) -> &'static str {
    if path.exists() {
        ""
    } else {
        ", not created yet"
    }
}
