//! `metaprompt serve` and `metaprompt tokens create|list|revoke`.

use chrono::Utc;
use metaprompt_registry::service::{Role, Token, mint_token, token_hash};
use metaprompt_server::ServerOptions;

use crate::args::{Global, ServeArgs, TokensCommand};
use crate::commands::library;
use crate::context;
use crate::format::outln;

pub async fn run(global: &Global, args: ServeArgs) -> anyhow::Result<()> {
    let config = context::load_config(global)?;
    let mut options = ServerOptions::from_config(&metaprompt_server::ServerConfig::read(&config)?)?;
    if let Some(listen) = &args.listen {
        options.listen = metaprompt_server::resolve_listen(listen)
            .map_err(|why| anyhow::anyhow!("--listen {listen}: {why}"))?;
    }
    options.insecure_local = args.insecure_local;
    options.task_roots.extend(args.tasks.iter().cloned());
    options.hosts.extend(args.hosts.iter().cloned());
    options.agent_interval = args.agent.then_some(args.agent_interval);
    if global.no_library {
        anyhow::bail!("the server serves the library; drop --no-library");
    }
    let engine = context::engine(global).await?;
    let library_path = engine.library_path().map(|p| p.display().to_string());
    let running = metaprompt_server::start(engine.clone(), options.clone()).await?;
    if !options.insecure_local {
        let service =
            metaprompt_registry::open_service(library_path.as_deref().unwrap_or_default()).await?;
        let none = service
            .tokens()
            .await?
            .iter()
            .all(|t| t.revoked_at.is_some());
        service.close().await;
        if none {
            eprintln!(
                "warning: the library has no tokens yet; every request will be refused. Create one: metaprompt tokens create --role admin --name you"
            );
        }
    }
    if args.print_address {
        outln!(
            "{}",
            serde_json::json!({"address": running.addr.to_string(), "pid": std::process::id()})
        );
    }
    eprintln!(
        "serving {} on http://{}{}",
        library_path.unwrap_or_default(),
        running.addr,
        if options.insecure_local {
            " (insecure-local: no tokens)"
        } else {
            ""
        }
    );
    let stop = running.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("stopping: finishing in-flight requests");
        stop.cancel();
    });
    running.wait().await?;
    engine.close().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

pub async fn tokens(global: &Global, cmd: TokensCommand) -> anyhow::Result<()> {
    let service = metaprompt_registry::open_service(library::path(global)?).await?;
    let result = match cmd {
        TokensCommand::Create { role, name } => {
            let role = Role::parse(&role)?;
            let secret = mint_token();
            let token = Token {
                name: name.clone(),
                role,
                created_at: Utc::now(),
                created_by: library::author(global),
                revoked_at: None,
            };
            match service.add_token(&token, &token_hash(&secret)).await {
                Ok(()) => {
                    outln!("{secret}");
                    eprintln!(
                        "token `{name}` ({role}) created; it is shown only now — keep it (the library stores its hash)"
                    );
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        TokensCommand::List { json } => match service.tokens().await {
            Ok(tokens) if json => {
                outln!("{}", serde_json::to_string_pretty(&tokens)?);
                Ok(())
            }
            Ok(tokens) if tokens.is_empty() => {
                outln!("no tokens; create one: metaprompt tokens create --role admin --name you");
                Ok(())
            }
            Ok(tokens) => {
                for t in tokens {
                    outln!(
                        "{:<20} {:<9} {}  by {}{}",
                        t.name,
                        t.role,
                        t.created_at.format("%Y-%m-%d %H:%M"),
                        t.created_by,
                        t.revoked_at
                            .map(|r| format!("  revoked {}", r.format("%Y-%m-%d %H:%M")))
                            .unwrap_or_default()
                    );
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        },
        TokensCommand::Revoke { name } => match service.revoke_token(&name, Utc::now()).await {
            Ok(true) => {
                outln!("revoked `{name}`");
                Ok(())
            }
            Ok(false) => Err(anyhow::anyhow!(
                "no live token named `{name}` (metaprompt tokens list)"
            )),
            Err(e) => Err(e.into()),
        },
    };
    service.close().await;
    result
}
