//! `metaprompt cache stats|clear`.

use crate::format::outln;
use metaprompt_llm::ResponseCache;

use crate::args::{CacheCommand, Global};
use crate::{context, format};

pub async fn run(global: &Global, cmd: CacheCommand) -> anyhow::Result<()> {
    let config = context::load_config(global)?;
    let Some(path) = context::cache_path(global, &config) else {
        anyhow::bail!(
            "no cache file: this system has no user cache directory; set METAPROMPT_CACHE or [cache].path"
        );
    };
    if !path.exists() {
        outln!("no response cache yet at {}", path.display());
        return Ok(());
    }
    let cache = ResponseCache::open(&path).await?;
    match cmd {
        CacheCommand::Stats { json } => {
            let s = cache.stats().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                outln!("cache     {}", s.path.display());
                outln!("entries   {}", s.entries);
                outln!("hits      {}", s.hits);
                outln!("size      {}", format::bytes(s.bytes));
                if let (Some(old), Some(new)) = (s.oldest_unix, s.newest_unix) {
                    outln!("written   {} … {}", date(old), date(new));
                }
                for m in &s.models {
                    outln!(
                        "  {:<40} {:>8} entries {:>8} hits",
                        m.model,
                        m.entries,
                        m.hits
                    );
                }
            }
        }
        CacheCommand::Clear { model } => {
            // Accept a spec or a name from config as well as the stored `provider:model` name.
            let name = model.map(|m| {
                let hub = metaprompt_llm::Hub::new(config.clone());
                hub.resolve(&m).map(|info| info.name).unwrap_or(m)
            });
            let n = cache.clear(name.as_deref()).await?;
            match name {
                Some(name) => outln!(
                    "deleted {n} cached responses of {name} from {}",
                    path.display()
                ),
                None => outln!("deleted {n} cached responses from {}", path.display()),
            }
        }
    }
    cache.close().await;
    Ok(())
}

/// A UTC timestamp as `YYYY-MM-DD HH:MM UTC` (civil-from-days, Howard Hinnant's algorithm: no
/// date crate for one line of output).
fn date(unix: i64) -> String {
    let (days, rem) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::date(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::date(1_741_569_952), "2025-03-10 01:25 UTC");
    }
}
