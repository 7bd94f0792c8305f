//! The `servent` command.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use servent::cli::{Cli, Command, EXIT_UNAVAILABLE, Mode, RunArgs, SearchArgs};
use servent::node::{self, NodeConfig};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match EnvFilter::try_new(cli.log_filter()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("servent: bad log filter {:?}: {e}", cli.log_filter());
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let name = cli.command.name();
    tracing::debug!(command = name, "starting");
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Search(args) => search(args),
        _ => {
            eprintln!("servent {name}: not available yet in this version");
            return ExitCode::from(EXIT_UNAVAILABLE as u8);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("servent {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The platform's data directory for servent.
fn default_data_dir() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if cfg!(target_os = "macos") {
        return home.map(|h| h.join("Library/Application Support/servent"));
    }
    if cfg!(windows) {
        return std::env::var_os("APPDATA").map(|a| PathBuf::from(a).join("servent"));
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(".local/share")))
        .map(|d| d.join("servent"))
}

fn run(args: RunArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if args.mode != Mode::Auto {
        eprintln!("servent run: --mode leaf|ultrapeer is not available yet in this version");
        return Ok(ExitCode::from(EXIT_UNAVAILABLE as u8));
    }
    let data_dir = args.data_dir.or_else(default_data_dir);
    if let Some(d) = &data_dir {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let config = NodeConfig {
        listen: args.listen,
        shares: args.share,
        peers: args.peer,
        data_dir,
        max_peers: args.max_peers,
        max_ttl: args.max_ttl,
        firewalled: args.firewalled,
        max_uploads: args.max_uploads,
        ..NodeConfig::default()
    };
    runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        let node = node::start(config, cancel.clone())
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        if args.firewalled {
            println!("firewalled: no inbound connections, reachable by push only");
        } else {
            println!("listening on {}", node.local_addr);
        }
        let _ = std::io::stdout().flush();
        shutdown_signal().await;
        tracing::info!("shutting down");
        let stop = node.shutdown();
        if tokio::time::timeout(Duration::from_secs(10), stop)
            .await
            .is_err()
        {
            return Err("shutdown took too long".into());
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn search(args: SearchArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let words = args.words.join(" ");
    let table = !args.json && std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    if table {
        let _ = writeln!(out, "{:<48} {:>12}  {:<21}  urn", "name", "size", "host");
    }
    let count = runtime()?.block_on(node::search::search(
        &args.peer,
        &words,
        args.ttl,
        Duration::from_secs(args.timeout),
        args.max_results,
        |hit| {
            let line = if args.json {
                hit.to_json()
            } else if table {
                format!(
                    "{:<48} {:>12}  {:<21}  {}",
                    hit.name,
                    hit.size,
                    format!("{}:{}", hit.host, hit.port),
                    hit.urn.map_or(String::new(), |u| u.to_string())
                )
            } else {
                format!(
                    "{}\t{}\t{}:{}\t{}",
                    hit.name,
                    hit.size,
                    hit.host,
                    hit.port,
                    hit.urn.map_or(String::new(), |u| u.to_string())
                )
            };
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        },
    ))?;
    tracing::info!(results = count, "search done");
    Ok(ExitCode::SUCCESS)
}
