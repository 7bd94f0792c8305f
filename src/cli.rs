//! The command line: every subcommand and flag. Each flag of a command is also
//! read from its own environment variable, `SERVENT_<COMMAND>_<FLAG>` (the
//! command's words and the flag's long name, upper case, `-` as `_`:
//! `SERVENT_RUN_LISTEN`, `SERVENT_NAPSTER_SHARE_NICK`), and from the config
//! file's table for the command (see [`crate::config`]). The options before the
//! command are `SERVENT_<FLAG>` and top-level keys of the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A Gnutella servent: share a directory, join a mesh, search and download, or run
/// a Napster-style central index.
#[derive(Debug, Parser)]
#[command(name = "servent", version, propagate_version = true)]
pub struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, env = "SERVENT_VERBOSE")]
    pub verbose: u8,
    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, env = "SERVENT_QUIET")]
    pub quiet: u8,
    /// Log filter in `tracing` env-filter syntax (e.g. `servent=debug,hyper=warn`);
    /// overrides -v/-q.
    #[arg(long, global = true, env = "SERVENT_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// How log lines are written: plain text (coloured on a terminal) or one
    /// JSON object per line.
    #[arg(long, global = true, env = "SERVENT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The config file (default: servent/config.toml in the platform's config
    /// directory, read when it exists).
    #[arg(long, global = true, env = "SERVENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Connect to a node as a leaf, send one query and print the hits.
    Search(SearchArgs),
    /// Download a file by URL, magnet link, or search.
    Get(GetArgs),
    /// List the files another host shares (browse host) and print them as hits.
    Browse(BrowseArgs),
    /// Run a Napster-compatible central index server.
    Index(IndexArgs),
    /// Use a Napster-compatible central index as a client.
    Napster(NapsterArgs),
    /// Inspect the settings.
    Config(ConfigArgs),
    /// What a running node is doing (through its control API).
    Status(StatusArgs),
    /// A running node's Gnutella links (through its control API).
    Peers(PeersArgs),
    /// A running node's download queue: list, add, pause, resume or cancel.
    Downloads(DownloadsArgs),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The role a node takes in the two-tier network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Leaf,
    Ultrapeer,
    Auto,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address to listen on for Gnutella, HTTP and push connections.
    #[arg(long, env = "SERVENT_RUN_LISTEN", default_value = "0.0.0.0:6346")]
    pub listen: SocketAddr,
    /// Directory to share (repeatable).
    #[arg(long, env = "SERVENT_RUN_SHARE", value_name = "DIR")]
    pub share: Vec<PathBuf>,
    /// Peer to connect to at start (repeatable; comma-separated in the variable).
    #[arg(
        long,
        env = "SERVENT_RUN_PEER",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    pub peer: Vec<String>,
    /// Where the host cache and hash cache are kept (default: the platform's data
    /// directory).
    #[arg(long, env = "SERVENT_RUN_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Gnutella connections at most, of every kind together.
    #[arg(long, env = "SERVENT_RUN_MAX_PEERS", default_value_t = 72)]
    pub max_peers: usize,
    /// As an ultrapeer: links to other ultrapeers (announced as X-Degree).
    #[arg(long, env = "SERVENT_RUN_MAX_ULTRAPEERS", default_value_t = 32)]
    pub max_ultrapeers: usize,
    /// As an ultrapeer: leaves served.
    #[arg(long, env = "SERVENT_RUN_MAX_LEAVES", default_value_t = 30)]
    pub max_leaves: usize,
    /// As a leaf: ultrapeers to stay connected to.
    #[arg(long, env = "SERVENT_RUN_LEAF_ULTRAPEERS", default_value_t = 3)]
    pub leaf_ultrapeers: usize,
    /// Highest TTL accepted on (and given to) queries.
    #[arg(long, env = "SERVENT_RUN_MAX_TTL", default_value_t = 7)]
    pub max_ttl: u8,
    /// Role in the two-tier network.
    #[arg(long, env = "SERVENT_RUN_MODE", value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// Accept no inbound connections and mark hits as needing a push.
    #[arg(long, env = "SERVENT_RUN_FIREWALLED")]
    pub firewalled: bool,
    /// Concurrent uploads before answering 503.
    #[arg(long, env = "SERVENT_RUN_MAX_UPLOADS", default_value_t = 8)]
    pub max_uploads: usize,
    /// The mesh is on a local network: learn, dial and push to private and
    /// loopback addresses too (always so when --listen is such an address).
    #[arg(long, env = "SERVENT_RUN_LOCAL_NETWORK")]
    pub local_network: bool,
    /// Open no UDP port (by default the node's port number takes Gnutella
    /// datagrams too).
    #[arg(long, env = "SERVENT_RUN_NO_UDP")]
    pub no_udp: bool,
    /// Ask no router to forward our port (NAT-PMP / PCP). By default a node
    /// listening on a private address asks the default gateway, unless
    /// --local-network.
    #[arg(long, env = "SERVENT_RUN_NO_PORT_MAPPING")]
    pub no_port_mapping: bool,
    /// Neither answer GUESS queries (as an ultrapeer) nor send our quiet
    /// searches on by GUESS.
    #[arg(long, env = "SERVENT_RUN_NO_GUESS")]
    pub no_guess: bool,
    /// Say where the node listens as a JSON record instead of a sentence.
    #[arg(long, env = "SERVENT_RUN_JSON")]
    pub json: bool,
    /// Address of the control API (default: 127.0.0.1:6347, given up with a
    /// warning when taken; an address given here that cannot be bound is an
    /// error).
    #[arg(long, env = "SERVENT_RUN_API", value_name = "ADDR")]
    pub api: Option<SocketAddr>,
    /// No control API.
    #[arg(long, env = "SERVENT_RUN_NO_API", conflicts_with = "api")]
    pub no_api: bool,
    /// Where the download queue writes files (default: `downloads` in the
    /// data directory).
    #[arg(long, env = "SERVENT_RUN_DOWNLOAD_DIR", value_name = "DIR")]
    pub download_dir: Option<PathBuf>,
    /// Downloads of the queue running at once.
    #[arg(long, env = "SERVENT_RUN_MAX_DOWNLOADS", default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub max_downloads: usize,
    /// A second port for FastTrack users (KaZaA's was 1214); the node's own
    /// port takes FastTrack sessions too.
    #[arg(long, env = "SERVENT_RUN_FASTTRACK_LISTEN", value_name = "ADDR")]
    pub fasttrack_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The node's control API address (default: as `run` has it, else 127.0.0.1:6347).
    #[arg(long, env = "SERVENT_STATUS_API", value_name = "ADDR")]
    pub api: Option<SocketAddr>,
    /// The node's data directory, where its API token is.
    #[arg(long, env = "SERVENT_STATUS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The status as a JSON record.
    #[arg(long, env = "SERVENT_STATUS_JSON")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PeersArgs {
    /// The node's control API address (default: as `run` has it, else 127.0.0.1:6347).
    #[arg(long, env = "SERVENT_PEERS_API", value_name = "ADDR")]
    pub api: Option<SocketAddr>,
    /// The node's data directory, where its API token is.
    #[arg(long, env = "SERVENT_PEERS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// One JSON record per link.
    #[arg(long, env = "SERVENT_PEERS_JSON")]
    pub json: bool,
}

/// What to do with the download queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DownloadsAction {
    List,
    Add,
    Pause,
    Resume,
    Cancel,
}

#[derive(Debug, Args)]
pub struct DownloadsArgs {
    /// list (the default), add URL|MAGNET, pause ID, resume ID or cancel ID.
    #[arg(value_enum, default_value_t = DownloadsAction::List)]
    pub action: DownloadsAction,
    /// The URL or magnet link to add, or the download's id.
    #[arg(value_name = "URL|MAGNET|ID")]
    pub target: Option<String>,
    /// With add: the file's name in the node's download directory.
    #[arg(long, env = "SERVENT_DOWNLOADS_NAME")]
    pub name: Option<String>,
    /// With cancel: delete the .part too (it is kept by default).
    #[arg(long, env = "SERVENT_DOWNLOADS_DELETE_PART")]
    pub delete_part: bool,
    /// The node's control API address (default: as `run` has it, else 127.0.0.1:6347).
    #[arg(long, env = "SERVENT_DOWNLOADS_API", value_name = "ADDR")]
    pub api: Option<SocketAddr>,
    /// The node's data directory, where its API token is.
    #[arg(long, env = "SERVENT_DOWNLOADS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// JSON records.
    #[arg(long, env = "SERVENT_DOWNLOADS_JSON")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Node to connect to as a leaf (one of --peer and --node is needed).
    #[arg(
        long,
        env = "SERVENT_SEARCH_PEER",
        value_name = "HOST:PORT",
        conflicts_with = "node"
    )]
    pub peer: Option<String>,
    /// Search through the running node's control API instead (the node
    /// searches its own links; see --api).
    #[arg(long, env = "SERVENT_SEARCH_NODE")]
    pub node: bool,
    /// With --node: the node's control API address (default: as `run` has it,
    /// else 127.0.0.1:6347).
    #[arg(long, env = "SERVENT_SEARCH_API", value_name = "ADDR")]
    pub api: Option<SocketAddr>,
    /// With --node: the node's data directory, where its API token is.
    #[arg(long, env = "SERVENT_SEARCH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seconds to wait for hits.
    #[arg(long, env = "SERVENT_SEARCH_TIMEOUT", default_value_t = 10)]
    pub timeout: u64,
    /// Stop after this many results.
    #[arg(long, env = "SERVENT_SEARCH_MAX_RESULTS", default_value_t = 100)]
    pub max_results: usize,
    /// One JSON object per hit on standard output.
    #[arg(long, env = "SERVENT_SEARCH_JSON")]
    pub json: bool,
    /// TTL of the query (lowered by the node to its maximum).
    #[arg(long, env = "SERVENT_SEARCH_TTL", default_value_t = 7, value_parser = clap::value_parser!(u8).range(1..=15))]
    pub ttl: u8,
    /// With --peer: do not send the query on by GUESS (UDP, to the peer and
    /// the ultrapeers it names) once the TCP query goes quiet.
    #[arg(long, env = "SERVENT_SEARCH_NO_GUESS")]
    pub no_guess: bool,
    /// Keywords to search for.
    #[arg(required = true, value_name = "WORDS")]
    pub words: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BrowseArgs {
    /// The host to browse.
    #[arg(required = true, value_name = "HOST:PORT")]
    pub host: String,
    /// Seconds the whole answer may take (what came by then is printed).
    #[arg(long, env = "SERVENT_BROWSE_TIMEOUT", default_value_t = 30)]
    pub timeout: u64,
    /// Stop after this many files.
    #[arg(long, env = "SERVENT_BROWSE_MAX_RESULTS", default_value_t = 20_000)]
    pub max_results: usize,
    /// Stop after this many bytes of answer (after inflating).
    #[arg(long, env = "SERVENT_BROWSE_MAX_BYTES", default_value_t = 16 << 20)]
    pub max_bytes: usize,
    /// One JSON object per file on standard output.
    #[arg(long, env = "SERVENT_BROWSE_JSON")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// An `http://` URL or `magnet:` link; with --peer, keywords to search for.
    #[arg(required = true, value_name = "URL|MAGNET|WORDS")]
    pub target: Vec<String>,
    /// Where to write the file.
    #[arg(short, long, env = "SERVENT_GET_OUTPUT", value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Machine-readable progress and result on standard output.
    #[arg(long, env = "SERVENT_GET_JSON")]
    pub json: bool,
    /// Search through this node and download the best match.
    #[arg(long, env = "SERVENT_GET_PEER", value_name = "HOST:PORT")]
    pub peer: Option<String>,
    /// With --peer, download every match instead of the best one.
    #[arg(long, env = "SERVENT_GET_ALL")]
    pub all: bool,
    /// Largest file to download, in bytes (a size a source or hit claims is
    /// never trusted past it).
    #[arg(long, env = "SERVENT_GET_MAX_SIZE", default_value_t = crate::node::get::DEFAULT_MAX_SIZE)]
    pub max_size: u64,
    /// Hand the download (a URL or magnet link) to the running node's queue
    /// and return; it goes on, and survives restarts, in the node.
    #[arg(long, env = "SERVENT_GET_NODE", conflicts_with_all = ["peer", "all"])]
    pub node: bool,
    /// With --node: the node's control API address (default: as `run` has it,
    /// else 127.0.0.1:6347).
    #[arg(long, env = "SERVENT_GET_API", value_name = "ADDR")]
    pub api: Option<SocketAddr>,
    /// With --node: the node's data directory, where its API token is.
    #[arg(long, env = "SERVENT_GET_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Address to listen on.
    #[arg(long, env = "SERVENT_INDEX_LISTEN", default_value = "0.0.0.0:8888")]
    pub listen: SocketAddr,
    /// Users allowed online at once.
    #[arg(long, env = "SERVENT_INDEX_MAX_USERS", default_value_t = 10_000)]
    pub max_users: usize,
    /// Results returned per search at most (1 to 10000).
    #[arg(
        long,
        env = "SERVENT_INDEX_MAX_RESULTS",
        default_value_t = 100,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000)
    )]
    pub max_results: usize,
    /// File whose lines are sent as the message of the day.
    #[arg(long, env = "SERVENT_INDEX_MOTD", value_name = "FILE")]
    pub motd: Option<PathBuf>,
    /// Where registered accounts, user levels and bans are kept.
    #[arg(long, env = "SERVENT_INDEX_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Make this registered nick Elite (the server's owner), kept in the data
    /// directory; may be repeated. Register the nick before or right after.
    #[arg(long, env = "SERVENT_INDEX_ADMIN", value_name = "NICK")]
    pub admin: Vec<String>,
    /// Our name towards linked servers (each server of a network needs its own).
    #[arg(long, env = "SERVENT_INDEX_SERVER_NAME", default_value = "servent")]
    pub server_name: String,
    /// Link to the index at HOST:PORT (OpenNap's server linking; may be
    /// repeated): its users' files and ours are found from either side.
    #[arg(long, env = "SERVENT_INDEX_LINK", value_name = "HOST:PORT")]
    pub link: Vec<String>,
    /// The password linked servers share; without one no link is made or
    /// accepted. Visible in the process list when given here: prefer the
    /// variable or --link-password-file.
    #[arg(long, env = "SERVENT_INDEX_LINK_PASSWORD", hide_env_values = true)]
    pub link_password: Option<String>,
    /// File whose first line is the link password.
    #[arg(
        long,
        env = "SERVENT_INDEX_LINK_PASSWORD_FILE",
        value_name = "FILE",
        conflicts_with = "link_password"
    )]
    pub link_password_file: Option<PathBuf>,
    /// Say where the index listens as a JSON record instead of a sentence.
    #[arg(long, env = "SERVENT_INDEX_JSON")]
    pub json: bool,
    /// Serve /metrics and /api/v1/status at this address (off by default).
    #[arg(long, env = "SERVENT_INDEX_API", value_name = "ADDR")]
    pub api: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct NapsterArgs {
    #[command(subcommand)]
    pub command: NapsterCommand,
}

#[derive(Debug, Subcommand)]
pub enum NapsterCommand {
    /// Log in, announce a shared directory, and serve transfers until SIGINT.
    Share {
        #[arg(long, env = "SERVENT_NAPSTER_SHARE_SERVER", value_name = "ADDR")]
        server: String,
        #[arg(long, env = "SERVENT_NAPSTER_SHARE_NICK")]
        nick: String,
        #[arg(long, env = "SERVENT_NAPSTER_SHARE_SHARE", value_name = "DIR")]
        share: PathBuf,
        /// Port for client-to-client transfers (0: firewalled).
        #[arg(long, env = "SERVENT_NAPSTER_SHARE_DATA_PORT", default_value_t = 6699)]
        data_port: u16,
        /// Password of a registered nick (default: a made-up one, which logs an
        /// unregistered nick in). Visible to other local users in the process
        /// list when given here: prefer the variable or --password-file.
        #[arg(long, env = "SERVENT_NAPSTER_SHARE_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// File whose first line is the password.
        #[arg(
            long,
            env = "SERVENT_NAPSTER_SHARE_PASSWORD_FILE",
            value_name = "FILE",
            conflicts_with = "password"
        )]
        password_file: Option<PathBuf>,
        /// Say what is shared as a JSON record instead of a sentence.
        #[arg(long, env = "SERVENT_NAPSTER_SHARE_JSON")]
        json: bool,
    },
    /// Search the index.
    Search {
        #[arg(long, env = "SERVENT_NAPSTER_SEARCH_SERVER", value_name = "ADDR")]
        server: String,
        #[arg(long, env = "SERVENT_NAPSTER_SEARCH_JSON")]
        json: bool,
        #[arg(
            long,
            env = "SERVENT_NAPSTER_SEARCH_MAX_RESULTS",
            default_value_t = 100
        )]
        max_results: usize,
        /// Content type to look for (`any` is our extension; a stock OpenNap
        /// knows the others only).
        #[arg(long = "type", env = "SERVENT_NAPSTER_SEARCH_TYPE", value_enum, default_value_t = NapsterType::Any)]
        kind: NapsterType,
        #[arg(required = true, value_name = "WORDS")]
        words: Vec<String>,
    },
    /// Download a file from another user.
    Get {
        #[arg(long, env = "SERVENT_NAPSTER_GET_SERVER", value_name = "ADDR")]
        server: String,
        #[arg(long, env = "SERVENT_NAPSTER_GET_FROM", value_name = "NICK")]
        from: String,
        #[arg(long, env = "SERVENT_NAPSTER_GET_FILE", value_name = "REMOTE NAME")]
        file: String,
        #[arg(short, long, env = "SERVENT_NAPSTER_GET_OUTPUT", value_name = "PATH")]
        output: Option<PathBuf>,
        /// The result as a JSON record.
        #[arg(long, env = "SERVENT_NAPSTER_GET_JSON")]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective settings of a command (or of all), each with where it
    /// came from: flag, env, file or default.
    Show {
        /// One JSON record instead of a table.
        #[arg(long)]
        json: bool,
        /// A command (`run`, `napster share`, ...), optionally followed by its
        /// flags, as it would be run.
        #[arg(
            value_name = "COMMAND [FLAGS]",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        command: Vec<String>,
    },
}

/// The content types of a Napster search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NapsterType {
    Any,
    Mp3,
    Audio,
    Video,
    Application,
    Image,
    Text,
}

impl Command {
    /// The subcommand's name as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Search(_) => "search",
            Command::Get(_) => "get",
            Command::Browse(_) => "browse",
            Command::Index(_) => "index",
            Command::Napster(n) => match n.command {
                NapsterCommand::Share { .. } => "napster share",
                NapsterCommand::Search { .. } => "napster search",
                NapsterCommand::Get { .. } => "napster get",
            },
            Command::Config(_) => "config show",
            Command::Status(_) => "status",
            Command::Peers(_) => "peers",
            Command::Downloads(_) => "downloads",
        }
    }
}

impl Cli {
    /// The log filter: `--log`/`SERVENT_LOG` if given, else a level from -v/-q.
    pub fn log_filter(&self) -> String {
        if let Some(f) = &self.log {
            return f.clone();
        }
        let level = 2 + self.verbose as i32 - self.quiet as i32;
        match level {
            i32::MIN..=0 => "error",
            1 => "warn",
            2 => "info",
            3 => "debug",
            _ => "trace",
        }
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults_and_repeats() {
        let cli = Cli::try_parse_from([
            "servent", "-vv", "run", "--share", "/a", "--share", "/b", "--peer", "h:1",
        ])
        .unwrap();
        assert_eq!(cli.log_filter(), "trace");
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!(r.listen, "0.0.0.0:6346".parse().unwrap());
        assert_eq!(r.share.len(), 2);
        assert_eq!(r.max_ttl, 7);
        assert_eq!(r.mode, Mode::Auto);
    }

    #[test]
    fn napster_password_from_a_file_or_the_argument_not_both() {
        let cli = Cli::try_parse_from([
            "servent",
            "napster",
            "share",
            "--server",
            "h:1",
            "--nick",
            "n",
            "--share",
            "/s",
            "--password-file",
            "/pw",
        ])
        .unwrap();
        let Command::Napster(NapsterArgs {
            command: NapsterCommand::Share { password_file, .. },
        }) = cli.command
        else {
            panic!("not napster share")
        };
        assert_eq!(password_file, Some(PathBuf::from("/pw")));
        let both = Cli::try_parse_from([
            "servent",
            "napster",
            "share",
            "--server",
            "h:1",
            "--nick",
            "n",
            "--share",
            "/s",
            "--password-file",
            "/pw",
            "--password",
            "x",
        ]);
        assert!(both.is_err());
    }

    /// Every flag has a variable, and its name is made by the rule the README
    /// gives, so no two commands share one.
    #[test]
    fn every_variable_is_named_after_its_command_and_flag() {
        fn check(cmd: &clap::Command, words: &[&str], seen: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if matches!(long, "help" | "version") || (!words.is_empty() && arg.is_global_set())
                {
                    continue;
                }
                let mut want = String::from("SERVENT_");
                for w in words {
                    want += &format!("{w}_");
                }
                want += long;
                let want = want.to_uppercase().replace('-', "_");
                if words == ["config", "show"] {
                    // Not a setting: no variable, no file key.
                    assert!(arg.get_env().is_none(), "{want}");
                    continue;
                }
                assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(want.as_str()));
                assert!(!seen.contains(&want), "{want} twice");
                seen.push(want);
            }
            for sub in cmd.get_subcommands() {
                let mut w = words.to_vec();
                w.push(sub.get_name());
                check(sub, &w, seen);
            }
        }
        let mut seen = Vec::new();
        check(&Cli::command(), &[], &mut seen);
        assert!(seen.len() > 40, "{seen:?}");
    }

    #[test]
    fn index_links() {
        let cli = Cli::try_parse_from([
            "servent",
            "index",
            "--server-name",
            "east",
            "--link",
            "10.0.0.1:8888",
            "--link-password-file",
            "/pw",
        ])
        .unwrap();
        let Command::Index(args) = cli.command else {
            panic!("not index")
        };
        assert_eq!(args.server_name, "east");
        assert_eq!(args.link, ["10.0.0.1:8888"]);
        assert_eq!(args.link_password_file, Some(PathBuf::from("/pw")));
        let both = Cli::try_parse_from([
            "servent",
            "index",
            "--link-password",
            "x",
            "--link-password-file",
            "/pw",
        ]);
        assert!(both.is_err());
    }

    #[test]
    fn index_admins_repeat() {
        let cli = Cli::try_parse_from(["servent", "index", "--admin", "boss", "--admin", "chief"])
            .unwrap();
        let Command::Index(args) = cli.command else {
            panic!("not index")
        };
        assert_eq!(args.admin, ["boss", "chief"]);
    }

    #[test]
    fn quiet_lowers_the_level() {
        let cli = Cli::try_parse_from(["servent", "-qq", "index"]).unwrap();
        assert_eq!(cli.log_filter(), "error");
        assert_eq!(cli.command.name(), "index");
    }
}
