//! Settings from four places, in this order of precedence: a flag on the command
//! line, its environment variable, the config file, the built-in default.
//!
//! The file is TOML. Its top-level keys are the options given before the command
//! (`verbose`, `quiet`, `log`, `log-format`); each command has a table named
//! after it (`[run]`, `[search]`, `[get]`, `[index]`, `[napster.share]`,
//! `[napster.search]`, `[napster.get]`) whose keys are the command's flags as
//! typed, without the dashes (`max-peers = 72`, `share = ["/srv/a"]`,
//! `firewalled = true`). A key in `[napster]` itself is a default for every
//! `napster` command that has the flag (`server`, `nick`...), overridden by the
//! command's own table. A key that names no flag is an error, so a typo is not
//! silently ignored.
//!
//! How: the file's values become the clap command's default values (checked by
//! the same value parsers as a flag), so clap itself applies command line >
//! environment > default; [`Loaded::source`] tells a default that came from the
//! file from a built-in one.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::cli::Cli;
use crate::output;
pub use crate::output::{Setting, Settings, Source};

/// Why the settings could not be read: either is a usage error (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A bad command line or environment variable, or `--help`/`--version`.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// A config file that cannot be read, is not TOML, or holds a bad key or value.
    #[error("{0}")]
    File(String),
}

/// The config file that was looked for.
#[derive(Clone, Debug, Default)]
pub struct ConfigFile {
    /// The file (none when there is no home or config directory to look in).
    pub path: Option<PathBuf>,
    /// Given with `--config`/`SERVENT_CONFIG` rather than the default path.
    pub explicit: bool,
    /// It existed and was read.
    pub found: bool,
    /// (command words, argument id) set by the file, with the key that set it.
    set: BTreeMap<(String, String), String>,
}

/// The parsed command line, with where each value came from.
pub struct Loaded {
    pub cli: Cli,
    pub matches: ArgMatches,
    pub file: ConfigFile,
    /// The command with the file's values as defaults.
    command: Command,
    /// The command as declared (its arguments in the order of `--help`).
    base: Command,
}

/// The platform's config directory for servent: `$XDG_CONFIG_HOME/servent` or
/// `~/.config/servent` (`~/Library/Application Support/servent` on macOS,
/// `%APPDATA%\servent` on Windows).
pub fn default_config_dir() -> Option<PathBuf> {
    platform_dir("XDG_CONFIG_HOME", ".config")
}

/// The platform's data directory for servent: `$XDG_DATA_HOME/servent` or
/// `~/.local/share/servent` (the same as the config directory on macOS and
/// Windows).
pub fn default_data_dir() -> Option<PathBuf> {
    platform_dir("XDG_DATA_HOME", ".local/share")
}

fn platform_dir(xdg: &str, under_home: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if cfg!(target_os = "macos") {
        return home.map(|h| h.join("Library/Application Support/servent"));
    }
    if cfg!(windows) {
        return std::env::var_os("APPDATA").map(|a| PathBuf::from(a).join("servent"));
    }
    std::env::var_os(xdg)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(under_home)))
        .map(|d| d.join("servent"))
}

/// Parses `args` (the program name first) with the config file's values filled in.
pub fn load<I, T>(args: I) -> Result<Loaded, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let base = Cli::command();
    let mut file = find_file(&base, &args);
    let mut command = base.clone();
    if let Some(path) = file.path.clone() {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                file.found = true;
                let table: toml::Table = text
                    .parse()
                    .map_err(|e| LoadError::File(format!("{}: {e}", path.display())))?;
                let mut assigned = Vec::new();
                walk(&command, &table, &[], "", &path, &mut assigned)?;
                command = apply(command, &assigned, &mut file.set);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !file.explicit => {}
            Err(e) => {
                return Err(LoadError::File(format!(
                    "cannot read the config file {}: {e}",
                    path.display()
                )));
            }
        }
    }
    let matches = command.clone().try_get_matches_from(&args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(Loaded {
        cli,
        matches,
        file,
        command,
        base,
    })
}

/// The file named by `--config`/`SERVENT_CONFIG`, else the default one.
fn find_file(base: &Command, args: &[OsString]) -> ConfigFile {
    // A lenient parse: the file may be what supplies a required flag.
    let given = base
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(args)
        .ok()
        .and_then(|m| m.get_one::<PathBuf>("config").cloned());
    match given {
        Some(path) => ConfigFile {
            path: Some(path),
            explicit: true,
            ..ConfigFile::default()
        },
        None => ConfigFile {
            path: default_config_dir().map(|d| d.join("config.toml")),
            ..ConfigFile::default()
        },
    }
}

/// Commands that have no table in the file.
const NOT_IN_FILE: &[&str] = &["config", "help"];

/// The flag of `cmd` a file key names (at the top level, the global options).
fn flag<'c>(cmd: &'c Command, key: &str) -> Option<&'c Arg> {
    cmd.get_arguments()
        .find(|a| !a.is_positional() && a.get_long() == Some(key) && settable(a))
}

fn settable(a: &Arg) -> bool {
    !matches!(a.get_id().as_str(), "help" | "version" | "config")
        && !matches!(a.get_action(), ArgAction::Help | ArgAction::Version)
}

/// One value of the file, for one argument of one command.
struct Assigned {
    command: Vec<String>,
    id: String,
    values: Vec<String>,
    key: String,
    /// How deep the table that set it is: a command's own table beats its group's.
    depth: usize,
}

fn walk(
    cmd: &Command,
    table: &toml::Table,
    path: &[String],
    prefix: &str,
    file: &Path,
    out: &mut Vec<Assigned>,
) -> Result<(), LoadError> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let bad = |why: String| LoadError::File(format!("{}: {key}: {why}", file.display()));
        if let Some(arg) = flag(cmd, k) {
            let values = values(cmd, arg, v).map_err(bad)?;
            out.push(Assigned {
                command: path.to_vec(),
                id: arg.get_id().to_string(),
                values,
                key,
                depth: path.len(),
            });
        } else if let Some(sub) = cmd
            .find_subcommand(k)
            .filter(|_| !NOT_IN_FILE.contains(&k.as_str()))
        {
            let t = v
                .as_table()
                .ok_or_else(|| bad(format!("must be a table ([{key}])")))?;
            let mut p = path.to_vec();
            p.push(k.clone());
            walk(sub, t, &p, &key, file, out)?;
        } else if !path.is_empty() && cmd.has_subcommands() {
            // A group's key: a default for each of its commands with the flag.
            let mut any = false;
            for sub in cmd.get_subcommands() {
                if let Some(arg) = flag(sub, k) {
                    let values = values(sub, arg, v).map_err(bad)?;
                    let mut p = path.to_vec();
                    p.push(sub.get_name().to_string());
                    out.push(Assigned {
                        command: p,
                        id: arg.get_id().to_string(),
                        values,
                        key: key.clone(),
                        depth: path.len(),
                    });
                    any = true;
                }
            }
            if !any {
                return Err(unknown(file, &key));
            }
        } else {
            return Err(unknown(file, &key));
        }
    }
    Ok(())
}

fn unknown(file: &Path, key: &str) -> LoadError {
    LoadError::File(format!(
        "{}: unknown key `{key}` (`servent config show` lists every setting)",
        file.display()
    ))
}

/// A file value as the strings clap would have been given, checked by the
/// argument's own value parser.
fn values(cmd: &Command, arg: &Arg, v: &toml::Value) -> Result<Vec<String>, String> {
    use toml::Value as V;
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => {
            return match v {
                V::Boolean(b) => Ok(vec![b.to_string()]),
                _ => Err("must be true or false".into()),
            };
        }
        ArgAction::Count => {
            return match v {
                V::Integer(n) if (0..=255).contains(n) => Ok(vec![n.to_string()]),
                _ => Err("must be a number from 0 to 255".into()),
            };
        }
        _ => {}
    }
    let many = matches!(arg.get_action(), ArgAction::Append);
    let scalar = |v: &V| match v {
        V::String(s) => Ok(s.clone()),
        V::Integer(n) => Ok(n.to_string()),
        V::Float(f) => Ok(f.to_string()),
        V::Boolean(b) => Ok(b.to_string()),
        _ => Err("must be a string, a number or a boolean".to_string()),
    };
    let list = match v {
        V::Array(items) if many => items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?,
        V::Array(_) => return Err("takes one value, not a list".into()),
        v => vec![scalar(v)?],
    };
    // The argument's own parser, by parsing the values alone with every other
    // argument of the command optional and out of the environment.
    let long = arg.get_long().expect("file keys are long flags");
    let trial = cmd
        .clone()
        .subcommand_required(false)
        .arg_required_else_help(false)
        .mut_args(|a| a.required(false).env(None::<&str>));
    let argv = std::iter::once(cmd.get_name().to_string())
        .chain(list.iter().map(|v| format!("--{long}={v}")));
    if let Err(e) = trial.try_get_matches_from(argv) {
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or("invalid value");
        return Err(first.strip_prefix("error: ").unwrap_or(first).to_string());
    }
    Ok(list)
}

/// `command` with the file's values as the defaults of their arguments.
fn apply(
    mut command: Command,
    assigned: &[Assigned],
    set: &mut BTreeMap<(String, String), String>,
) -> Command {
    // The most specific table wins.
    let mut best: BTreeMap<(Vec<String>, String), &Assigned> = BTreeMap::new();
    for a in assigned {
        let slot = best.entry((a.command.clone(), a.id.clone())).or_insert(a);
        if a.depth > slot.depth {
            *slot = a;
        }
    }
    for ((path, id), a) in best {
        command = set_default(command, &path, &id, &a.values);
        set.insert((path.join(" "), id), a.key.clone());
    }
    command
}

fn set_default(cmd: Command, path: &[String], id: &str, values: &[String]) -> Command {
    match path.split_first() {
        None => {
            let values: Vec<String> = values.to_vec();
            cmd.mut_arg(id, |a| a.default_values(values).required(false))
        }
        Some((first, rest)) => cmd.mut_subcommand(first, |sub| set_default(sub, rest, id, values)),
    }
}

impl Loaded {
    /// Where the value of argument `id` of the command `path` came from.
    pub fn source(&self, path: &[&str], matches: &ArgMatches, id: &str) -> Source {
        match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env,
            _ if self
                .file
                .set
                .contains_key(&(path.join(" "), id.to_string())) =>
            {
                Source::File
            }
            _ => Source::Default,
        }
    }

    /// The settings of `servent config show WORDS`: the options before the
    /// command, then those of the command WORDS names (with its flags, if
    /// WORDS goes on with them) or of every command.
    pub fn show(&self, words: &[String]) -> Result<Settings, LoadError> {
        let mut settings = Vec::new();
        // The options before the command, as this invocation has them.
        self.collect(&[], &self.base, &self.matches, &mut settings);
        // Which command, and the flags given with it.
        let mut cmd = &self.base;
        let mut path: Vec<String> = Vec::new();
        for w in words {
            match cmd
                .find_subcommand(w)
                .filter(|_| !NOT_IN_FILE.contains(&w.as_str()))
            {
                Some(sub) => {
                    cmd = sub;
                    path.push(w.clone());
                }
                None => break,
            }
        }
        let flags = &words[path.len()..];
        if !flags.is_empty() && cmd.has_subcommands() {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::InvalidSubcommand,
                format!(
                    "`{}` is not a command (`servent --help` lists them)\n",
                    words.join(" ")
                ),
            )
            .with_cmd(&self.command)
            .into());
        }
        let mut leaves = Vec::new();
        leaf_commands(cmd, &mut path.clone(), &mut leaves);
        for leaf in leaves {
            // Parse the command as it would run, with nothing required.
            let relaxed = relax(self.command.clone(), &leaf);
            let argv = std::iter::once("servent".to_string())
                .chain(leaf.iter().cloned())
                .chain(flags.iter().cloned());
            let parsed = relaxed.try_get_matches_from(argv)?;
            let mut m = &parsed;
            let mut c = &self.base;
            for w in &leaf {
                m = m.subcommand_matches(w).expect("the command was parsed");
                c = c.find_subcommand(w).expect("a known command");
            }
            let words: Vec<&str> = leaf.iter().map(String::as_str).collect();
            self.collect(&words, c, m, &mut settings);
        }
        Ok(Settings {
            file: self.file.path.as_ref().map(|p| p.display().to_string()),
            file_found: self.file.found,
            settings,
        })
    }

    fn collect(&self, path: &[&str], cmd: &Command, m: &ArgMatches, out: &mut Vec<Setting>) {
        for arg in cmd.get_arguments() {
            if arg.is_positional() || (!settable(arg) && arg.get_id() != "config") {
                continue;
            }
            if !path.is_empty() && arg.is_global_set() {
                continue;
            }
            let id = arg.get_id().as_str();
            let raw: Vec<String> = m
                .get_raw(id)
                .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let value = if raw.is_empty() {
                serde_json::Value::Null
            } else if arg.is_hide_env_values_set() {
                "(hidden)".into()
            } else {
                match arg.get_action() {
                    ArgAction::SetTrue | ArgAction::SetFalse => m.get_flag(id).into(),
                    ArgAction::Count => m.get_count(id).into(),
                    ArgAction::Append => raw.into(),
                    _ => raw.into_iter().next().into(),
                }
            };
            let source = if id == "config" {
                match m.value_source(id) {
                    Some(ValueSource::CommandLine) => Source::Flag,
                    Some(ValueSource::EnvVariable) => Source::Env,
                    _ => Source::Default,
                }
            } else {
                self.source(path, m, id)
            };
            let value = if id == "config" && value.is_null() {
                // The default file, whether or not it is there.
                self.file
                    .path
                    .as_ref()
                    .map_or(serde_json::Value::Null, |p| p.display().to_string().into())
            } else {
                value
            };
            out.push(Setting {
                command: path.join(" "),
                key: arg.get_long().unwrap_or(id).to_string(),
                value,
                source,
                env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                file_key: self
                    .file
                    .set
                    .get(&(path.join(" "), id.to_string()))
                    .cloned(),
            });
        }
    }
}

/// The commands (by their words) at and below `cmd`, leaving out `config`.
fn leaf_commands(cmd: &Command, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if !cmd.has_subcommands() {
        out.push(path.clone());
        return;
    }
    for sub in cmd.get_subcommands() {
        if NOT_IN_FILE.contains(&sub.get_name()) {
            continue;
        }
        path.push(sub.get_name().to_string());
        leaf_commands(sub, path, out);
        path.pop();
    }
}

/// `cmd` with every argument of the command at `path` optional.
fn relax(cmd: Command, path: &[String]) -> Command {
    match path.split_first() {
        None => cmd
            .subcommand_required(false)
            .arg_required_else_help(false)
            .mut_args(|a| a.required(false)),
        Some((first, rest)) => cmd.mut_subcommand(first, |sub| relax(sub, rest)),
    }
}

/// The settings as a table for a terminal: one line per setting with its value,
/// its source and its variable.
pub fn render(s: &Settings) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# config file: {} ({})",
        s.file.as_deref().map_or("none".into(), output::escape),
        if s.file_found { "read" } else { "not found" }
    );
    let mut section = None;
    for set in &s.settings {
        if section != Some(&set.command) {
            let name = if set.command.is_empty() {
                "options before the command".to_string()
            } else {
                format!("[{}]", set.command.replace(' ', "."))
            };
            let _ = writeln!(out, "\n{name}");
            section = Some(&set.command);
        }
        let value = match &set.value {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(v) => v.clone(),
            serde_json::Value::Array(vs) => vs
                .iter()
                .map(|v| v.as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(","),
            v => v.to_string(),
        };
        let source = match &set.file_key {
            Some(k) if set.source == Source::File => format!("file ({k})"),
            _ => set.source.as_str().to_string(),
        };
        let _ = writeln!(
            out,
            "{:<16} {:<28} {:<36} {}",
            set.key,
            output::escape(&value),
            set.env.as_deref().unwrap_or(""),
            source,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(file: &str, args: &[&str]) -> Result<Loaded, LoadError> {
        let dir = std::env::temp_dir().join(format!(
            "servent-config-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, file).unwrap();
        let mut argv = vec!["servent".to_string(), "--config".into()];
        argv.push(path.display().to_string());
        argv.extend(args.iter().map(|s| s.to_string()));
        let r = load(argv);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    fn err(file: &str, args: &[&str]) -> String {
        match loaded(file, args) {
            Err(LoadError::File(m)) => m,
            Err(e) => panic!("not a file error: {e}"),
            Ok(_) => panic!("accepted {file:?}"),
        }
    }

    #[test]
    fn file_values_fill_what_the_command_line_leaves() {
        let l = loaded(
            "verbose = 1\n[run]\nmax-peers = 5\nshare = ['/a', '/b']\nfirewalled = true\n",
            &["run", "--max-ttl", "4"],
        )
        .unwrap();
        let crate::cli::Command::Run(r) = &l.cli.command else {
            panic!("not run")
        };
        assert_eq!((r.max_peers, r.max_ttl, r.firewalled), (5, 4, true));
        assert_eq!(r.share, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(l.cli.verbose, 1);
        let m = l.matches.subcommand_matches("run").unwrap();
        assert_eq!(l.source(&["run"], m, "max_peers"), Source::File);
        assert_eq!(l.source(&["run"], m, "max_ttl"), Source::Flag);
        assert_eq!(l.source(&["run"], m, "max_leaves"), Source::Default);
    }

    #[test]
    fn a_group_table_is_a_default_for_its_commands() {
        let l = loaded(
            "[napster]\nserver = 'idx:8888'\n[napster.search]\nserver = 'other:1'\n",
            &["napster", "get", "--from", "a", "--file", "f"],
        )
        .unwrap();
        let crate::cli::Command::Napster(n) = &l.cli.command else {
            panic!("not napster")
        };
        let crate::cli::NapsterCommand::Get { server, .. } = &n.command else {
            panic!("not get")
        };
        assert_eq!(server, "idx:8888");
        let s = l.show(&["napster".into(), "search".into()]).unwrap();
        let server = s
            .settings
            .iter()
            .find(|s| s.command == "napster search" && s.key == "server")
            .unwrap();
        assert_eq!(server.value, "other:1");
        assert_eq!(server.file_key.as_deref(), Some("napster.search.server"));
    }

    #[test]
    fn bad_files_are_refused_naming_the_key() {
        assert!(err("[run]\nlisten-on = 1\n", &["index"]).contains("unknown key `run.listen-on`"));
        assert!(err("colour = true\n", &["index"]).contains("unknown key `colour`"));
        assert!(err("[config]\njson = true\n", &["index"]).contains("unknown key `config`"));
        assert!(err("[search]\nwords = ['a']\n", &["index"]).contains("`search.words`"));
        assert!(err("[napster]\nlisten = 'x'\n", &["index"]).contains("`napster.listen`"));
        let e = err("[run]\nlisten = 'nowhere'\n", &["index"]);
        assert!(e.contains("run.listen") && e.contains("nowhere"), "{e}");
        assert!(err("[run]\nmax-ttl = 300\n", &["index"]).contains("run.max-ttl"));
        assert!(err("[run]\nfirewalled = 'yes'\n", &["index"]).contains("true or false"));
        assert!(err("[index]\nlisten = ['a', 'b']\n", &["index"]).contains("not a list"));
        assert!(err("[index]\nmax-results = 0\n", &["index"]).contains("index.max-results"));
        assert!(err("run = 1\n", &["index"]).contains("must be a table"));
        assert!(err("[run\n", &["index"]).contains("config.toml"));
    }

    #[test]
    fn a_missing_file_given_by_name_is_an_error() {
        let r = load(["servent", "--config", "/nonexistent/servent.toml", "index"]);
        let Err(LoadError::File(m)) = r else {
            panic!("accepted")
        };
        assert!(m.contains("/nonexistent/servent.toml"), "{m}");
    }
}
