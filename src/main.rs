//! The `servent` command.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod node_cmds;

use servent::api;
use servent::cli::{
    BrowseArgs, Cli, Command, ConfigArgs, ConfigCommand, GetArgs, IndexArgs, LogFormat, Mode,
    NapsterCommand, NapsterType, RunArgs, SearchArgs, WebcacheArgs,
};
use servent::config::{self, LoadError};
use servent::napster::client::{self, DataPort, GetConfig, Login, Session, ShareConfig};
use servent::napster::index::IndexConfig;
use servent::napster::server::{self, ServerConfig};
use servent::napster::transfer::Timeouts;
use servent::napster::wire::{Kind, KindFilter, SearchRequest};
use servent::node::{self, NodeConfig, TierConfig};
use servent::output::{self, Download, DownloadState, Listening, SourceBytes};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// A mistake in how the command was used, found after the command line was
/// parsed (a bad value, options that do not go together, a missing directory):
/// exit status 2, like the errors clap finds. Everything else that fails is 1.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A usage error as the error of a command.
fn usage<T>(msg: impl Into<String>) -> Result<T, Box<dyn std::error::Error>> {
    Err(Box::new(Usage(msg.into())))
}

/// Writes a line to standard output, ignoring a closed pipe: a server that
/// says where it listens must not die because nobody reads what it said.
macro_rules! say {
    ($($t:tt)*) => {{
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, $($t)*);
    }};
}

/// Exit status of a usage error.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let loaded = match config::load(std::env::args_os()) {
        Ok(l) => l,
        Err(LoadError::Clap(e)) => e.exit(),
        Err(LoadError::File(m)) => {
            eprintln!("servent: {m}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cli = &loaded.cli;
    let filter = match EnvFilter::try_new(cli.log_filter()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("servent: bad log filter {:?}: {e}", cli.log_filter());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        // Colours only for a person at a terminal, never into a file or pipe,
        // and not for one who asked for none (https://no-color.org).
        LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            logs.with_ansi(std::io::stderr().is_terminal() && !no_color)
                .init()
        }
    }
    warn_about_old_variables(&loaded);

    // One policy for every panic: report it and end the process. A node that
    // panicked in one task must not live on as a zombie that accepts connections
    // it can no longer serve (or holds a poisoned lock); its supervisor, or the
    // user, starts it again, and the data directory is written atomically.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        tracing::error!(%info, "internal error; stopping");
        std::process::abort();
    }));

    let name = cli.command.name();
    tracing::debug!(command = name, "starting");
    let result = match &loaded.cli.command {
        Command::Config(ConfigArgs {
            command: ConfigCommand::Show { json, command },
        }) => config_show(&loaded, *json, command),
        _ => match loaded.cli.command {
            Command::Run(args) => run(args),
            Command::Search(args) => search(args),
            Command::Get(args) => get(args),
            Command::Browse(args) => browse(args),
            Command::Index(args) => index(args),
            Command::Napster(args) => napster(args.command),
            Command::Status(args) => node_cmds::status(args),
            Command::Peers(args) => node_cmds::peers(args),
            Command::Downloads(args) => node_cmds::downloads(args),
            Command::Webcache(args) => webcache(args),
            Command::Config(_) => unreachable!("handled above"),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("servent {name}: {}", output::escape(&e.to_string()));
            if e.is::<Usage>() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Each command reads its own variables (`SERVENT_RUN_LISTEN`, not
/// `SERVENT_LISTEN`, which meant different things to different commands): a
/// variable of the old kind for a flag of this command is named, not obeyed
/// silently-not.
fn warn_about_old_variables(loaded: &config::Loaded) {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    for w in loaded.cli.command.name().split(' ') {
        match cmd.find_subcommand(w) {
            Some(sub) => cmd = sub.clone(),
            None => return,
        }
    }
    for arg in cmd.get_arguments() {
        let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
            continue;
        };
        let old = format!("SERVENT_{}", long.to_uppercase().replace('-', "_"));
        if std::env::var_os(&old).is_some() && env.to_str() != Some(old.as_str()) {
            tracing::warn!(
                "{old} is no longer read (each command has its own variables): use {}",
                env.to_string_lossy()
            );
        }
    }
}

fn config_show(
    loaded: &config::Loaded,
    json: bool,
    words: &[String],
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let settings = match loaded.show(words) {
        Ok(s) => s,
        Err(LoadError::Clap(e)) => e.exit(),
        Err(LoadError::File(m)) => return usage(m),
    };
    if json {
        println!("{}", output::json_line(&settings));
    } else {
        print!("{}", config::render(&settings));
    }
    Ok(ExitCode::SUCCESS)
}

fn napster(command: NapsterCommand) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match command {
        NapsterCommand::Share {
            server,
            nick,
            share,
            data_port,
            password,
            password_file,
            json,
        } => {
            let from_file = password_file.map(|f| read_password_file(&f)).transpose()?;
            napster_share(server, nick, share, data_port, from_file.or(password), json)
        }
        NapsterCommand::Search {
            server,
            json,
            max_results,
            kind,
            words,
        } => napster_search(server, json, max_results, kind, words),
        NapsterCommand::Get {
            server,
            from,
            file,
            output,
            json,
        } => napster_get(server, from, file, output, json),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Every directory in `dirs` exists and is a directory: sharing one that is not
/// is a mistake in the command, not something to warn about and carry on.
fn check_shares<'a>(
    dirs: impl IntoIterator<Item = &'a PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    for d in dirs {
        match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return usage(format!("--share {}: not a directory", d.display())),
            Err(e) => return usage(format!("--share {}: {e}", d.display())),
        }
    }
    Ok(())
}

/// The UDP host caches to ask: those given, else the built-in ones in an
/// order of this run's own (so that nodes started together do not all ask
/// the same cache first), or none (asked for, or listening on loopback:
/// nothing outside could be reached from there).
fn udp_host_caches(given: &[String], none: bool, loopback: bool) -> Vec<String> {
    if none || (loopback && given.is_empty()) {
        return Vec::new();
    }
    if !given.is_empty() {
        return given
            .iter()
            .filter(|s| !s.trim().is_empty())
            .cloned()
            .collect();
    }
    let mut v: Vec<String> = node::DEFAULT_UDP_HOST_CACHES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let turn = servent::wire::Guid::new_random().0[0] as usize % v.len();
    v.rotate_left(turn);
    v
}

fn run(args: RunArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    check_shares(&args.share)?;
    let webcaches = args.webcaches();
    let data_dir = args.data_dir.or_else(config::default_data_dir);
    if let Some(d) = &data_dir {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let config = NodeConfig {
        webcaches,
        listen: args.listen,
        shares: args.share,
        peers: args.peer,
        data_dir,
        max_peers: args.max_peers,
        max_ttl: args.max_ttl,
        firewalled: args.firewalled,
        max_uploads: args.max_uploads,
        local_network: args.local_network,
        udp: !args.no_udp,
        udp_host_caches: udp_host_caches(
            &args.udp_host_cache,
            args.no_udp_host_cache,
            args.listen.ip().is_loopback(),
        ),
        udp_host_cache_mode: match args.act_as_udp_host_cache {
            servent::cli::CacheMode::Auto => servent::core::engine::CacheMode::Auto,
            servent::cli::CacheMode::Always => servent::core::engine::CacheMode::Always,
            servent::cli::CacheMode::Never => servent::core::engine::CacheMode::Never,
        },
        port_mapping: !args.no_port_mapping,
        guess: servent::core::guess::GuessConfig {
            serve: !args.no_guess,
            client: !args.no_guess,
            ..Default::default()
        },
        download_dir: args.download_dir.clone(),
        max_downloads: args.max_downloads,
        fasttrack_listen: args.fasttrack_listen,
        tier: TierConfig {
            mode: match args.mode {
                Mode::Leaf => node::Mode::Leaf,
                Mode::Ultrapeer => node::Mode::Ultrapeer,
                Mode::Auto => node::Mode::Auto,
            },
            ultrapeer_links: args.max_ultrapeers,
            leaves: args.max_leaves,
            leaf_ultrapeers: args.leaf_ultrapeers,
            ..TierConfig::default()
        },
        ..NodeConfig::default()
    };
    runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        let api_dir = config.data_dir.clone();
        let node = node::start(config, cancel.clone())
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let api_tasks = tokio_util::task::TaskTracker::new();
        let api_at = if args.no_api {
            None
        } else {
            start_api(&node, args.api, api_dir.as_deref(), &api_tasks).await?
        };
        if args.json {
            let addr = (!args.firewalled).then(|| node.local_addr.to_string());
            say!(
                "{}",
                output::json_line(&Listening {
                    role: "node".into(),
                    addr,
                    files: None,
                })
            );
        } else if args.firewalled {
            say!("firewalled: no inbound connections, reachable by push only");
        } else {
            say!("listening on {}", node.local_addr);
        }
        if let Some(a) = node.fasttrack_addr {
            if args.json {
                say!(
                    "{}",
                    output::json_line(&Listening {
                        role: "fasttrack".into(),
                        addr: Some(a.to_string()),
                        files: None,
                    })
                );
            } else {
                say!("FastTrack users on {a}");
            }
        }
        if let Some((a, api_token)) = api_at {
            if args.json {
                say!(
                    "{}",
                    output::json_line(&Listening {
                        role: "api".into(),
                        addr: Some(a.to_string()),
                        files: None,
                    })
                );
            } else {
                say!("control API on http://{a}/api/v1/");
                say!("web page: {}", page_link(a, api_token.as_deref()));
            }
        }
        let _ = std::io::stdout().flush();
        shutdown_signal().await;
        api_tasks.close();
        stop_within_limit(node.shutdown()).await
    })
}

fn webcache(args: WebcacheArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    use servent::bootstrap::server as cache;
    let config = cache::ServerConfig {
        listen: args.listen,
        local_network: args.local_network,
        data_dir: args.data_dir.clone(),
        store: servent::core::webcache::StoreConfig {
            max_hosts: args.max_hosts,
            max_urls: args.max_urls,
            host_ttl: Duration::from_secs(args.host_ttl),
            url_ttl: Duration::from_secs(args.url_ttl),
            update_every: Duration::from_secs(args.update_period),
            answer_hosts: args.answer_hosts,
            ..Default::default()
        },
    };
    runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        let handle = cache::start(config, cancel)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        if args.json {
            say!(
                "{}",
                output::json_line(&Listening {
                    role: "webcache".into(),
                    addr: Some(handle.local_addr.to_string()),
                    files: None,
                })
            );
        } else {
            say!("listening on {}", handle.local_addr);
        }
        let _ = std::io::stdout().flush();
        shutdown_signal().await;
        stop_within_limit(handle.shutdown()).await
    })
}

/// Starts the control API beside `node`: at `addr` (an error if it cannot be
/// bound), or at the default address (a warning if it cannot be bound). The
/// token is written to the data directory first.
async fn start_api(
    node: &node::NodeHandle,
    addr: Option<std::net::SocketAddr>,
    data_dir: Option<&std::path::Path>,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<Option<(std::net::SocketAddr, Option<String>)>, Box<dyn std::error::Error>> {
    let at = addr.unwrap_or_else(|| api::DEFAULT_ADDR.parse().expect("a valid address"));
    let listener = match tokio::net::TcpListener::bind(at).await {
        Ok(l) => l,
        Err(e) if addr.is_none() => {
            tracing::warn!(addr = %at, error = %e, "control API not started (give --api ADDR to choose another address, --no-api to say none)");
            return Ok(None);
        }
        Err(e) => return Err(format!("cannot listen for the control API on {at}: {e}").into()),
    };
    let token = match data_dir {
        Some(d) => match api::create_token(d) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(dir = %d.display(), error = %e, "cannot write the API token: the API refuses every change");
                None
            }
        },
        None => None,
    };
    let handler = std::sync::Arc::new(api::node::NodeApi {
        control: node.control(),
        cancel: node.cancelled(),
    });
    let server = api::serve(listener, handler, token.clone(), tasks, node.cancelled())?;
    Ok(Some((server.local_addr, token)))
}

/// The web page's address, with the token in the fragment: the browser keeps
/// it (the fragment is never sent to the server, nor in a Referer), and only
/// whoever sees the node's output has it.
fn page_link(api: std::net::SocketAddr, token: Option<&str>) -> String {
    let mut at = api;
    if at.ip().is_unspecified() {
        at.set_ip(match at {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    match token {
        Some(t) => format!("http://{at}/#token={t}"),
        None => format!("http://{at}/"),
    }
}

/// A server's shutdown after a signal, given ten seconds: success, or an
/// error when it took longer.
async fn stop_within_limit(
    stop: impl std::future::Future<Output = ()>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    tracing::info!("shutting down");
    match tokio::time::timeout(Duration::from_secs(10), stop).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(_) => Err("shutdown took too long".into()),
    }
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
    if args.peer.is_none() && !args.node {
        return usage("give --peer HOST:PORT, or --node to search through the running node");
    }
    let words = args.words.join(" ");
    let text = output::Text::for_stdout(std::io::stdout().is_terminal());
    let mut out = std::io::stdout().lock();
    if !args.json {
        if let Some(h) = text.hit_header(output::Network::Gnutella) {
            let _ = writeln!(out, "{h}");
        }
    }
    if args.node {
        let c = api::client::Client::locate(args.api, args.data_dir.clone());
        let count = node_cmds::search(
            &c,
            &words,
            Duration::from_secs(args.timeout),
            args.max_results,
            |hit| {
                let line = if args.json {
                    output::json_line(hit)
                } else {
                    text.hit(hit)
                };
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            },
        )?;
        tracing::info!(results = count, "search done");
        return Ok(ExitCode::SUCCESS);
    }
    let peer = args
        .peer
        .as_deref()
        .expect("clap requires --peer without --node");
    let count = runtime()?.block_on(node::search::search_guess(
        peer,
        &words,
        args.ttl,
        Duration::from_secs(args.timeout),
        args.max_results,
        !args.no_guess,
        |hit| {
            let hit = hit.record();
            let line = if args.json {
                output::json_line(&hit)
            } else {
                text.hit(&hit)
            };
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        },
    ))?;
    tracing::info!(results = count, "search done");
    Ok(ExitCode::SUCCESS)
}

fn browse(args: BrowseArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let text = output::Text::for_stdout(std::io::stdout().is_terminal());
    let mut out = std::io::stdout().lock();
    if !args.json {
        if let Some(h) = text.hit_header(output::Network::Gnutella) {
            let _ = writeln!(out, "{h}");
        }
    }
    let limits = servent::wire::browse::Limits {
        max_bytes: args.max_bytes,
        max_results: args.max_results,
    };
    let done = runtime()?.block_on(node::browse::browse(
        &args.host,
        Duration::from_secs(args.timeout),
        limits,
        |hit| {
            let hit = hit.record();
            let line = if args.json {
                output::json_line(&hit)
            } else {
                text.hit(&hit)
            };
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        },
    ))?;
    if done.cut {
        tracing::warn!(
            results = done.results,
            "the answer was cut short by --max-results, --max-bytes or --timeout"
        );
    }
    tracing::info!(results = done.results, "browse done");
    Ok(ExitCode::SUCCESS)
}

fn index(args: IndexArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let json = args.json;
    let motd = match &args.motd {
        Some(path) => std::fs::read(path)
            .or_else(|e| usage(format!("cannot read the MOTD file {}: {e}", path.display())))?
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
            .collect::<Vec<_>>(),
        None => Vec::new(),
    };
    let mut motd = motd;
    while motd.last().is_some_and(|l| l.is_empty()) {
        motd.pop();
    }
    if let Some(d) = &args.data_dir {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let mut salt_seed = [0u8; 16];
    salt_seed.copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    if !args.admin.is_empty() && args.data_dir.is_none() {
        tracing::warn!("--admin without --data-dir: the level is kept in memory only");
    }
    let link_password = match &args.link_password_file {
        Some(f) => Some(read_password_file(f)?),
        None => args.link_password.clone(),
    };
    if !args.link.is_empty() && link_password.is_none() {
        return Err(
            "--link needs --link-password (or SERVENT_INDEX_LINK_PASSWORD, or --link-password-file)"
                .into(),
        );
    }
    if !servent::napster::index::valid_server_name(args.server_name.as_bytes()) {
        return Err("--server-name: 1-64 printable characters, no space, quote or colon".into());
    }
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        admins: args.admin,
        links: args.link,
        index: IndexConfig {
            motd,
            max_users: args.max_users,
            max_results: args.max_results as u32,
            salt_seed,
            server_name: args.server_name,
            link_password,
            ..IndexConfig::default()
        },
        ..ServerConfig::default()
    };
    runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        let handle = server::start(config, cancel.clone()).await?;
        let api_at = match args.api {
            Some(at) => {
                let listener = tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|e| format!("cannot listen for the API on {at}: {e}"))?;
                let (tracker, cancel) = handle.tasks();
                let handler = std::sync::Arc::new(api::index::IndexApi {
                    counters: handle.counters(),
                    started: std::time::Instant::now(),
                });
                Some(api::serve(listener, handler, None, &tracker, cancel)?.local_addr)
            }
            None => None,
        };
        if json {
            let addr = Some(handle.local_addr.to_string());
            let role = "index".into();
            let line = Listening {
                role,
                addr,
                files: None,
            };
            say!("{}", output::json_line(&line));
        } else {
            say!("listening on {}", handle.local_addr);
        }
        if let Some(a) = api_at {
            if json {
                let line = Listening {
                    role: "api".into(),
                    addr: Some(a.to_string()),
                    files: None,
                };
                say!("{}", output::json_line(&line));
            } else {
                say!("API on http://{a}/");
            }
        }
        let _ = std::io::stdout().flush();
        shutdown_signal().await;
        stop_within_limit(handle.shutdown()).await
    })
}

/// The first line of a password file, without its line end.
fn read_password_file(path: &std::path::Path) -> Result<String, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path).or_else(|e| {
        usage(format!(
            "cannot read the password file {}: {e}",
            path.display()
        ))
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return usage(format!("the password file {} is empty", path.display()));
    }
    Ok(line.to_string())
}

fn napster_share(
    server: String,
    nick: String,
    share: PathBuf,
    data_port: u16,
    password: Option<String>,
    json: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    check_shares([&share])?;
    let cache_file = config::default_data_dir().and_then(|d| {
        std::fs::create_dir_all(&d).ok()?;
        Some(d.join("sha1-cache.txt"))
    });
    runtime()?.block_on(async {
        let data = if data_port == 0 {
            DataPort::Firewalled
        } else {
            let l = tokio::net::TcpListener::bind(("0.0.0.0", data_port))
                .await
                .map_err(|e| format!("cannot listen on data port {data_port}: {e}"))?;
            DataPort::Listen(l)
        };
        let cancel = CancellationToken::new();
        let config = ShareConfig {
            server: server.clone(),
            nick: nick.clone(),
            password,
            root: share,
            data,
            cache_file,
            max_uploads: 8,
            timeouts: Timeouts::default(),
        };
        let sharer = client::start_share(config, cancel.clone()).await?;
        match sharer.data_addr {
            _ if json => {
                let line = Listening {
                    role: "napster_share".into(),
                    addr: sharer.data_addr.map(|a| a.to_string()),
                    files: Some(sharer.files),
                };
                println!("{}", output::json_line(&line));
            }
            Some(a) => println!(
                "sharing {} files as {nick} on {server}, data port {}",
                sharer.files,
                a.port()
            ),
            None => println!(
                "sharing {} files as {nick} on {server}, firewalled",
                sharer.files
            ),
        }
        let _ = std::io::stdout().flush();
        let stop = cancel.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            stop.cancel();
        });
        sharer.wait().await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn napster_search(
    server: String,
    json: bool,
    max_results: usize,
    kind: NapsterType,
    words: Vec<String>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let text = words.join(" ");
    if text.contains('"') {
        return usage("search words cannot contain '\"'");
    }
    let kind = match kind {
        NapsterType::Any => KindFilter::Any,
        NapsterType::Mp3 => KindFilter::One(Kind::Mp3),
        NapsterType::Audio => KindFilter::One(Kind::Audio),
        NapsterType::Video => KindFilter::One(Kind::Video),
        NapsterType::Application => KindFilter::One(Kind::Application),
        NapsterType::Image => KindFilter::One(Kind::Image),
        NapsterType::Text => KindFilter::One(Kind::Text),
    };
    let req = SearchRequest {
        contains: vec![text.into_bytes()],
        max_results: Some(max_results.min(u32::MAX as usize) as u32),
        kind,
        ..SearchRequest::default()
    };
    let text = output::Text::for_stdout(std::io::stdout().is_terminal());
    let mut out = std::io::stdout().lock();
    if !json {
        if let Some(h) = text.hit_header(output::Network::Napster) {
            let _ = writeln!(out, "{h}");
        }
    }
    let count = runtime()?.block_on(async {
        let wait = Duration::from_secs(30);
        let mut session = Session::login(&server, &Login::anonymous(0), wait).await?;
        session
            .search(&req, wait, |r| {
                let hit = client::hit_record(&r);
                let line = if json {
                    output::json_line(&hit)
                } else {
                    text.hit(&hit)
                };
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            })
            .await
    })?;
    tracing::info!(results = count, "search done");
    Ok(ExitCode::SUCCESS)
}

fn napster_get(
    server: String,
    from: String,
    file: String,
    output: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let output = output.unwrap_or_else(|| PathBuf::from(client::local_name(file.as_bytes())));
    let mut record = Download::new(Some(file.clone()), None, None);
    let config = GetConfig {
        server,
        from: from.clone(),
        file: file.into_bytes(),
        output: output.clone(),
        wait: Duration::from_secs(90),
        timeouts: Timeouts::default(),
    };
    let done = runtime()?.block_on(client::get(config))?;
    use servent::napster::transfer::Verified;
    if json {
        record.state = DownloadState::Done;
        record.path = Some(output.display().to_string());
        record.size = Some(done.size);
        record.done = done.size;
        record.sources = vec![SourceBytes {
            source: from,
            bytes: done.size - done.offset,
        }];
        record.verified = Some(
            match done.verified {
                Verified::Sha1 => "sha1",
                Verified::HeadMd5 { .. } => "head_md5",
                Verified::Unmatched => "unmatched",
                Verified::Unchecked => "unchecked",
            }
            .to_string(),
        );
        record.agreeing = Some(done.agreeing as u32);
        println!("{}", output::json_line(&record));
        return Ok(ExitCode::SUCCESS);
    }
    if done.offset == done.size {
        println!(
            "saved {} ({} bytes, all of them already in the .part)",
            output.display(),
            done.size
        );
    } else if done.offset > 0 {
        println!(
            "saved {} ({} bytes, resumed at {})",
            output.display(),
            done.size,
            done.offset
        );
    } else {
        println!("saved {} ({} bytes)", output.display(), done.size);
    }
    match done.verified {
        Verified::Sha1 => println!("verified: the content's SHA-1 matches the uploader's"),
        Verified::HeadMd5 { start, len } => println!(
            "verified: the MD5 of bytes {start}..{} matches the uploader's md5 field",
            start + len
        ),
        Verified::Unmatched => println!(
            "not verified: the md5 field matches no MD5 convention we know of the uploader's client"
        ),
        Verified::Unchecked => println!("not verified: the uploader gave no checksum"),
    }
    if done.agreeing > 0 {
        println!(
            "{} other user(s) list a file of the same size and md5 field",
            done.agreeing
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit status of a download stopped by SIGINT/SIGTERM (its `.part` is kept).
const EXIT_INTERRUPTED: u8 = 130;

fn get(args: GetArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    use servent::node::get::{self as dl, SourceSpec, Wanted};
    use servent::wire::http::HttpUrl;
    use servent::wire::magnet::Magnet;

    if args.node {
        if args.target.len() != 1 {
            return usage("give one URL or magnet link to hand to the node");
        }
        let c = api::client::Client::locate(args.api, args.data_dir.clone());
        let name = args
            .output
            .as_ref()
            .and_then(|o| o.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        if args
            .output
            .as_ref()
            .is_some_and(|o| o.parent().is_some_and(|p| !p.as_os_str().is_empty()))
        {
            return usage("with --node, -o names the file in the node's download directory only");
        }
        return node_cmds::add(&c, &args.target[0], name.as_deref(), args.json);
    }
    let rt = runtime()?;
    let result = rt.block_on(async {
        let cancel = CancellationToken::new();
        {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                cancel.cancel();
            });
        }
        let mut jobs: Vec<Wanted> = Vec::new();
        let mut route = None;
        let mut link = None;
        if let Some(peer) = &args.peer {
            let words = args.target.join(" ");
            let l = std::sync::Arc::new(
                node::search::LeafLink::connect(peer, Duration::from_secs(10)).await?,
            );
            let mut hits = Vec::new();
            l.query(&words, 7, Duration::from_secs(3), 200, |h| hits.push(h))
                .await?;
            jobs = group_hits(hits);
            if jobs.is_empty() {
                return Err(format!("no results with a SHA-1 or FastTrack hash for {words:?}").into());
            }
            if !args.all {
                jobs.truncate(1);
            }
            route = Some(dl::PushRoute::start(l.clone(), cancel.clone()).await?);
            link = Some(l);
        } else {
            if args.target.len() != 1 {
                return usage("give one URL or magnet link (or --peer HOST:PORT WORDS...)");
            }
            let t = &args.target[0];
            if t.len() >= 7 && t[..7].eq_ignore_ascii_case("magnet:") {
                let m = Magnet::parse(t).or_else(|e| usage(e.to_string()))?;
                if m.sources.is_empty() {
                    return usage("the magnet link names no source (xs=http://...); search for it with --peer");
                }
                jobs.push(Wanted {
                    urn: Some(m.urn),
                    fth: None,
                    size: m.size,
                    name: m.name,
                    sources: m.sources.into_iter().map(SourceSpec::Url).collect(),
                });
            } else {
                let Some(u) = HttpUrl::parse(t) else {
                    return usage(format!("not an http:// URL or magnet: link: {t}"));
                };
                jobs.push(Wanted {
                    urn: u.urn(),
                    fth: None,
                    size: None,
                    name: u.file_name(),
                    sources: vec![SourceSpec::Url(u)],
                });
            }
        }
        // With several files, -o names a directory.
        let (dir, single) = match (&args.output, jobs.len()) {
            (Some(o), n) if n > 1 => {
                std::fs::create_dir_all(o).map_err(|e| format!("cannot create {}: {e}", o.display()))?;
                (o.clone(), None)
            }
            (o, _) => (PathBuf::from("."), o.clone()),
        };
        let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("a valid template"),
            );
            b
        });
        let mut failed = 0;
        let mut interrupted = false;
        for job in jobs {
            let json = args.json;
            let bar = bar.clone();
            let mut record = Download::new(
                job.name.clone(),
                job.urn.map(|u| u.to_string()),
                job.size,
            );
            if job.urn.is_none() {
                record.fth = job.fth.map(|f| f.hex());
            }
            let outcome = dl::download(
                job,
                single.clone(),
                &dir,
                route.clone(),
                dl::GetConfig {
                    max_size: args.max_size,
                    ..dl::GetConfig::default()
                },
                cancel.clone(),
                |p| {
                    if json {
                        record.size = Some(p.size);
                        record.done = p.done;
                        record.bytes_per_sec = p.rate.max(0.0).round() as u64;
                        record.sources_active = p.active;
                        record.sources_known = p.sources;
                        println!("{}", output::json_line(&record));
                        let _ = std::io::stdout().flush();
                    } else if let Some(b) = &bar {
                        b.set_length(p.size);
                        b.set_position(p.done);
                        b.set_message(format!("{}/{} sources", p.active, p.sources));
                    }
                },
            )
            .await;
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            record.sources_active = 0;
            record.bytes_per_sec = 0;
            match outcome {
                Ok(o) => {
                    let path = o.path.display().to_string();
                    if args.json {
                        record.state = DownloadState::Done;
                        record.path = Some(path);
                        record.urn = o.urn.map(|u| u.to_string());
                        record.fth = o.fth.map(|f| f.hex());
                        record.size = Some(o.size);
                        record.done = o.size;
                        record.sources = o
                            .sources
                            .into_iter()
                            .map(|(source, bytes)| SourceBytes { source, bytes })
                            .collect();
                        println!("{}", output::json_line(&record));
                    } else {
                        // The hash the file was checked by.
                        let hash = match (o.urn, o.fth) {
                            (Some(u), _) => u.to_string(),
                            (None, Some(f)) => format!("fth:{}", f.hex()),
                            (None, None) => String::new(),
                        };
                        println!("{}\t{}\t{hash}", output::escape(&path), o.size);
                    }
                }
                Err(e) => {
                    interrupted |= matches!(e, dl::GetError::Interrupted(_));
                    if args.json {
                        record.state = if interrupted {
                            DownloadState::Interrupted
                        } else {
                            DownloadState::Failed
                        };
                        record.error = Some(e.to_string());
                        println!("{}", output::json_line(&record));
                    }
                    eprintln!("servent get: {}", output::escape(&e.to_string()));
                    failed += 1;
                }
            }
            let _ = std::io::stdout().flush();
            if interrupted {
                break;
            }
        }
        if let Some(l) = link {
            if let Ok(l) = std::sync::Arc::try_unwrap(l) {
                l.close().await;
            }
        }
        Ok(if interrupted {
            ExitCode::from(EXIT_INTERRUPTED)
        } else if failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    });
    // A failure before any download started still ends the JSON stream with
    // a record saying why.
    if let (true, Err(e)) = (args.json, &result) {
        let mut record = Download::new(None, None, None);
        record.state = DownloadState::Failed;
        record.error = Some(e.to_string());
        println!("{}", output::json_line(&record));
    }
    result
}

/// Hits grouped into downloads by SHA-1, the file with the most sources first
/// (then the larger). A hit without a SHA-1 but with a FastTrack hash (a
/// FastTrack user's file, answered by a bridging supernode) is grouped by that
/// hash and its size, and checked by it; hits with neither cannot be verified
/// and are left out.
fn group_hits(hits: Vec<node::search::SearchHit>) -> Vec<servent::node::get::Wanted> {
    use servent::fasttrack::hash::Fth;
    use servent::node::get::{SourceSpec, Wanted};
    use servent::wire::huge::Sha1Urn;
    #[derive(PartialEq)]
    enum Key {
        Sha1(Sha1Urn),
        Fth(Fth, u64),
    }
    let mut groups: Vec<(Key, Wanted)> = Vec::new();
    for h in hits {
        let key = match (h.urn, h.fth) {
            (Some(urn), _) => Key::Sha1(urn),
            (None, Some(fth)) => Key::Fth(fth, h.size),
            (None, None) => continue,
        };
        let spec = SourceSpec::Hit {
            addr: std::net::SocketAddr::new(h.host, h.port),
            index: h.index,
            name: h.name.clone(),
            servent: h.servent_guid,
            push: h.push,
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, w)) => {
                // Each source once, however many paths its hit came by.
                let here = std::net::SocketAddr::new(h.host, h.port);
                let dup = w.sources.iter().any(|s| {
                    matches!(s, SourceSpec::Hit { servent, addr, push, .. }
                        if *servent == h.servent_guid || (*addr == here && !*push && !h.push))
                });
                if !dup && w.size == Some(h.size) {
                    w.sources.push(spec);
                }
            }
            None => groups.push((
                key,
                Wanted {
                    urn: h.urn,
                    fth: h.fth,
                    size: Some(h.size),
                    name: Some(h.name),
                    sources: vec![spec],
                },
            )),
        }
    }
    let mut v: Vec<Wanted> = groups.into_iter().map(|(_, w)| w).collect();
    v.sort_by(|a, b| {
        b.sources
            .len()
            .cmp(&a.sources.len())
            .then(b.size.cmp(&a.size))
    });
    v
}
