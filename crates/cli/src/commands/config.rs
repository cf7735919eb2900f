//! `metaprompt config show|model`.

use metaprompt_llm::ProviderKind;

use crate::args::{ConfigCommand, Global};
use crate::{context, format};

pub async fn run(global: &Global, cmd: ConfigCommand) -> anyhow::Result<()> {
    let config = context::load_config(global)?;
    match cmd {
        ConfigCommand::Show => {
            match &config.source {
                Some(p) => println!("config    {}", p.display()),
                None => println!("config    none found (built-in defaults)"),
            }
            match context::cache_disabled_by(global, &config) {
                Some(why) => println!("cache     off ({why})"),
                None => println!(
                    "cache     {}",
                    context::cache_path(global, &config)
                        .unwrap_or_default()
                        .display()
                ),
            }
            println!("providers openai, anthropic, local (built in)");
            for (name, p) in &config.providers {
                let kind = p.kind.map_or("built in", ProviderKind::as_str);
                println!(
                    "  {name:<12} {kind:<10} {}",
                    p.base_url.as_deref().unwrap_or("(default URL)")
                );
            }
            if !config.models.is_empty() {
                println!("models");
                for name in config.models.keys() {
                    println!("  {name}");
                }
            }
        }
        ConfigCommand::Model { spec } => {
            let hub = metaprompt_llm::Hub::new(config);
            let m = hub.resolve(&spec)?;
            println!("name          {}", m.name);
            println!("kind          {}", m.kind.as_str());
            println!("model         {}", m.model);
            if !m.base_url.is_empty() {
                println!("base_url      {}", m.base_url);
            }
            match &m.api_key_env {
                Some(var) => {
                    let set = std::env::var(var).is_ok_and(|v| !v.trim().is_empty());
                    println!(
                        "api key       ${var} ({})",
                        if set { "set" } else { "NOT SET" }
                    );
                }
                None => println!("api key       none sent"),
            }
            println!(
                "format        {}",
                if m.format == metaprompt_llm::PromptFormat::Chat {
                    "chat"
                } else {
                    "text"
                }
            );
            match m.pricing {
                Some(p) => println!(
                    "pricing       ${} in / ${} out per million tokens{}",
                    p.input_per_mtok,
                    p.output_per_mtok,
                    p.cached_input_per_mtok
                        .map(|c| format!(" (${c} cached input)"))
                        .unwrap_or_default()
                ),
                None => println!(
                    "pricing       unknown (costs will show as unknown; set [models.\"{}\"].pricing)",
                    m.name
                ),
            }
            println!("concurrency   {}", m.concurrency);
            println!("timeout       {}", format::duration(m.timeout));
            println!(
                "retries       {} (backoff from {})",
                m.retry.max_retries,
                format::duration(m.retry.base_delay)
            );
        }
    }
    Ok(())
}
