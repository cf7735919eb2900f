//! `metaprompt complete`: one raw call, printed with its usage and cost.

use std::io::{Read as _, Write as _};

use anyhow::Context as _;
use metaprompt_llm::{Message, Prompt, PromptFormat, Request};

use crate::args::{CompleteArgs, Global};
use crate::{context, format};

pub async fn run(global: &Global, args: CompleteArgs) -> anyhow::Result<()> {
    let text = match args.text.as_deref() {
        Some("-") | None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the prompt from standard input")?;
            s
        }
        Some(t) => t.to_string(),
    };
    if text.trim().is_empty() {
        anyhow::bail!("the prompt is empty (give it as an argument, or on standard input)");
    }
    let hub = context::hub(global).await?;
    let model = hub.model(&args.model)?;
    let prompt = if args.raw || model.info().format == PromptFormat::Text {
        Prompt::Text(text)
    } else {
        let mut messages = Vec::new();
        if let Some(system) = args.system {
            messages.push(Message::system(system));
        }
        messages.push(Message::user(text));
        Prompt::Chat(messages)
    };
    let request = Request {
        prompt,
        temperature: args.temperature,
        max_tokens: args.max_tokens,
        stop: args.stop,
        seed: args.seed,
        sample: args.sample,
    };
    let response = model.complete(&request).await?;
    if let Some(cache) = hub.cache() {
        cache.close().await;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &response)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "{}", response.text)?;
    let u = &response.usage;
    let cached_input = u
        .cached_input_tokens
        .filter(|&n| n > 0)
        .map(|n| format!(" ({n} cached)"))
        .unwrap_or_default();
    let origin = if response.cached {
        "from cache, no cost"
    } else {
        "live call"
    };
    eprintln!(
        "── {} · {} in{} + {} out tokens · {} · {} · finish: {} · {}",
        model.info().name,
        u.input_tokens,
        cached_input,
        u.output_tokens,
        format::cost(response.cost_usd),
        format::duration(response.latency),
        response.finish_reason,
        origin,
    );
    Ok(())
}
