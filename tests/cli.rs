//! The command line as a user meets it: downloads refuse what they cannot fetch,
//! flags come from the environment and the config file too, output is versioned
//! JSON or escaped text, and bad input is a usage error (exit status 2).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use servent::output::{Download, DownloadState, Hit, Listening, Versioned};

mod common;
use common::Dir;

/// The binary with `args` and `env`, none of the caller's `SERVENT_*`
/// variables, and no config file unless `env` names one.
fn cmd(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_servent"));
    cmd.args(args);
    // Keep the caller's SERVENT_* settings and config file out of the test.
    for (k, _) in std::env::vars() {
        if k.starts_with("SERVENT_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("SERVENT_CONFIG", common::NO_CONFIG);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn servent(args: &[&str], env: &[(&str, &str)]) -> Output {
    cmd(args, env).output().expect("the servent binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A JSON line as a record of kind `kind`, checking it is version 1.
fn record<T: serde::de::DeserializeOwned>(line: &str, kind: &str) -> T {
    let r: Versioned<T> = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!((r.v, r.kind.as_str()), (1, kind), "{line}");
    r.record
}

/// Starts a long-running command with `--json` and returns it with the
/// address of its `listening` record.
fn start(mut c: Command) -> (Child, String) {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the servent binary runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let l: Listening = record(line.trim_end(), "listening");
    (child, l.addr.expect("an address"))
}

fn stop(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn flags_are_read_from_the_environment() {
    // A bad value from the environment is rejected like one on the command line.
    let out = servent(&["run"], &[("SERVENT_RUN_LISTEN", "not-an-address")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not-an-address"));
    // Good ones get through to the command (here to the MOTD file it reads first).
    let out = servent(
        &["index"],
        &[
            ("SERVENT_INDEX_LISTEN", "127.0.0.1:0"),
            ("SERVENT_INDEX_MOTD", "/nonexistent/motd.txt"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/motd.txt"));
    // --firewalled from the environment: the node says it takes no connections.
    let data = Dir::new("cli-fw");
    let mut child = cmd(&["run", "--listen", "127.0.0.1:0", "-q"], &[])
        .env("SERVENT_RUN_FIREWALLED", "true")
        .env("SERVENT_RUN_DATA_DIR", &data.0)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the servent binary runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    stop(child);
    assert!(line.starts_with("firewalled"), "{line}");
    // The verbosity count too: SERVENT_VERBOSE=2 (like -vv) shows debug lines.
    let unreachable = ["napster", "search", "--server", "127.0.0.1:1", "x"];
    let out = servent(&unreachable, &[("SERVENT_VERBOSE", "2")]);
    assert!(stderr(&out).contains("starting"));
    let out = servent(&unreachable, &[]);
    assert!(!stderr(&out).contains("starting"));
}

#[test]
fn each_command_has_its_own_variables() {
    // SERVENT_PEER once meant "dial" to run and "search through" to get: now
    // each has its own name, and the old one is named in a warning, not obeyed.
    let out = servent(
        &["config", "show", "--json", "get"],
        &[
            ("SERVENT_GET_PEER", "hub:6346"),
            ("SERVENT_RUN_PEER", "a:1"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let s: servent::config::Settings =
        record(String::from_utf8_lossy(&out.stdout).trim_end(), "config");
    let peer = s
        .settings
        .iter()
        .find(|s| s.command == "get" && s.key == "peer")
        .unwrap();
    assert_eq!(peer.value, "hub:6346");
    assert_eq!(peer.env.as_deref(), Some("SERVENT_GET_PEER"));
    assert_eq!(peer.source, servent::config::Source::Env);
    assert!(!s.settings.iter().any(|s| s.command == "run"));
    // Every flag of every command: SERVENT_<COMMAND>_<FLAG>.
    let out = servent(&["config", "show", "--json"], &[]);
    let s: servent::config::Settings =
        record(String::from_utf8_lossy(&out.stdout).trim_end(), "config");
    for set in &s.settings {
        let mut want = String::from("SERVENT_");
        if !set.command.is_empty() {
            want += &format!("{}_", set.command.replace(' ', "_"));
        }
        want += &set.key.replace('-', "_");
        assert_eq!(set.env.as_deref(), Some(want.to_uppercase().as_str()));
    }
    // An old name is reported for the command it would have been meant for.
    let out = servent(
        &["index"],
        &[
            ("SERVENT_LISTEN", "bad address"),
            ("SERVENT_INDEX_MOTD", "/nonexistent/motd.txt"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("SERVENT_LISTEN is no longer read") && err.contains("SERVENT_INDEX_LISTEN"),
        "{err}"
    );
}

fn write_config(dir: &Dir, text: &str) -> String {
    dir.file("servent.toml", text.as_bytes())
        .display()
        .to_string()
}

/// The setting `key` of `command` from `config show --json`.
fn setting(out: &Output, command: &str, key: &str) -> (serde_json::Value, String) {
    assert!(out.status.success(), "{}", stderr(out));
    let s: servent::config::Settings =
        record(String::from_utf8_lossy(&out.stdout).trim_end(), "config");
    let set = s
        .settings
        .into_iter()
        .find(|s| s.command == command && s.key == key)
        .unwrap_or_else(|| panic!("no {command} {key}"));
    (set.value, set.source.as_str().to_string())
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let dir = Dir::new("cli-precedence");
    let file = write_config(
        &dir,
        "[run]\nmax-peers = 1\nmax-leaves = 2\nmax-ttl = 3\nshare = ['/srv/a', '/srv/b']\n",
    );
    let env = [
        ("SERVENT_CONFIG", file.as_str()),
        ("SERVENT_RUN_MAX_PEERS", "10"),
        ("SERVENT_RUN_MAX_LEAVES", "20"),
    ];
    let out = servent(
        &["config", "show", "--json", "run", "--max-peers", "100"],
        &env,
    );
    for (key, value, source) in [
        ("max-peers", "100", "flag"),
        ("max-leaves", "20", "env"),
        ("max-ttl", "3", "file"),
        ("max-uploads", "8", "default"),
    ] {
        assert_eq!(
            setting(&out, "run", key),
            (value.into(), source.into()),
            "{key}"
        );
    }
    let (shares, source) = setting(&out, "run", "share");
    assert_eq!(
        (shares, source.as_str()),
        (serde_json::json!(["/srv/a", "/srv/b"]), "file")
    );
    // The table says the same, with the file key and the variable.
    let out = servent(&["config", "show", "run", "--max-peers", "100"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |k: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{k} ")))
            .unwrap_or_else(|| panic!("{k}: {text}"))
            .to_string()
    };
    assert!(line("max-peers").ends_with("flag"), "{text}");
    assert!(
        line("max-leaves").contains("SERVENT_RUN_MAX_LEAVES"),
        "{text}"
    );
    assert!(line("max-ttl").ends_with("file (run.max-ttl)"), "{text}");
    assert!(line("max-uploads").ends_with("default"), "{text}");

    // And the command runs with them: the index listens where the file says,
    // and prints its address as JSON because the file says so.
    let file = write_config(&dir, "[index]\nlisten = '127.0.0.1:0'\njson = true\n");
    let (child, addr) = start(cmd(&["--config", &file, "index"], &[]));
    stop(child);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
}

#[test]
fn the_default_config_file_is_read_when_there() {
    let home = Dir::new("cli-xdg");
    let xdg = home.0.join("config");
    let mut show = cmd(&["config", "show", "--json", "search"], &[]);
    show.env_remove("SERVENT_CONFIG")
        .env("XDG_CONFIG_HOME", &xdg);
    // Missing: fine, the defaults.
    let out = show.output().unwrap();
    assert_eq!(
        setting(&out, "search", "ttl"),
        ("7".into(), "default".into())
    );
    std::fs::create_dir_all(xdg.join("servent")).unwrap();
    std::fs::write(xdg.join("servent/config.toml"), "[search]\nttl = 4\n").unwrap();
    let out = show.output().unwrap();
    assert_eq!(setting(&out, "search", "ttl"), ("4".into(), "file".into()));
    // --config /dev/null leaves it out.
    let out = cmd(
        &[
            "--config",
            "/dev/null",
            "config",
            "show",
            "--json",
            "search",
        ],
        &[],
    )
    .env_remove("SERVENT_CONFIG")
    .env("XDG_CONFIG_HOME", &xdg)
    .output()
    .unwrap();
    assert_eq!(
        setting(&out, "search", "ttl"),
        ("7".into(), "default".into())
    );
    // A bad key in the default file is as much an error as in a named one.
    std::fs::write(xdg.join("servent/config.toml"), "[search]\nttll = 4\n").unwrap();
    let out = show.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("search.ttll"), "{}", stderr(&out));
}

#[test]
fn bad_config_files_are_usage_errors() {
    let dir = Dir::new("cli-badconf");
    let unknown = write_config(&dir, "[run]\nmax-peer = 3\n");
    let out = servent(&["--config", &unknown, "index"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("run.max-peer") && err.contains(&unknown),
        "{err}"
    );
    // A file named but missing, by flag or variable.
    let out = servent(&["--config", "/nonexistent/servent.toml", "index"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/servent.toml"));
    let out = servent(
        &["index"],
        &[("SERVENT_CONFIG", "/nonexistent/servent.toml")],
    );
    assert_eq!(out.status.code(), Some(2));
    // A bad value names its key.
    let bad = write_config(&dir, "[search]\nttl = 99\n");
    let out = servent(&["--config", &bad, "config", "show"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("search.ttl"), "{}", stderr(&out));
    // Not TOML.
    let junk = write_config(&dir, "[run\n");
    let out = servent(&["--config", &junk, "index"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn usage_errors_exit_2() {
    let dir = Dir::new("cli-usage");
    let not_dir = dir.file("file.txt", b"x").display().to_string();
    for (args, want) in [
        (&["frobnicate"][..], "frobnicate"),
        (&["run", "--max-ttl", "300"], "300"),
        (&["search"], "--peer"),
        (
            &["search", "--peer", "127.0.0.1:1", "--ttl", "0", "x"],
            "--ttl",
        ),
        (
            &[
                "napster",
                "search",
                "--server",
                "127.0.0.1:1",
                "--type",
                "movie",
                "x",
            ],
            "movie",
        ),
        (
            &["napster", "get", "--server", "127.0.0.1:1", "--from", "x"],
            "--file",
        ),
        (
            &["napster", "search", "--server", "127.0.0.1:1", "a\"b"],
            "cannot contain",
        ),
        (&["index", "--max-results", "0"], "--max-results"),
        (&["--log-format", "xml", "index"], "xml"),
        (&["get", "a", "b"], "one URL or magnet"),
        (&["get", "ftp://example.org/x"], "not an http:// URL"),
        (&["get", "magnet:?dn=x"], "no urn:sha1:"),
        (
            &[
                "get",
                "magnet:?xt=urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5",
            ],
            "names no source",
        ),
        // Sharing what is not there is a mistake, not a warning to scroll past.
        (
            &[
                "run",
                "--listen",
                "127.0.0.1:0",
                "--share",
                "/nonexistent/share",
            ],
            "--share /nonexistent/share",
        ),
        (
            &["run", "--listen", "127.0.0.1:0", "--share", &not_dir],
            "not a directory",
        ),
        (
            &[
                "napster",
                "share",
                "--server",
                "127.0.0.1:1",
                "--nick",
                "n",
                "--share",
                "/nonexistent/share",
            ],
            "--share /nonexistent/share",
        ),
        (
            &[
                "napster",
                "share",
                "--server",
                "127.0.0.1:1",
                "--nick",
                "n",
                "--share",
                "/tmp",
                "--password-file",
                "/nonexistent/pw",
            ],
            "/nonexistent/pw",
        ),
        (&["config", "show", "run", "--bogus"], "--bogus"),
        (&["config", "show", "napster", "nothing"], "not a command"),
    ] {
        let out = servent(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn runtime_failures_exit_1() {
    let out = servent(
        &["search", "--peer", "127.0.0.1:1", "--timeout", "2", "x"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot connect"));
    let out = servent(&["get", "http://127.0.0.1:1/get/1/x"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no source could be reached"));
    let out = servent(&["napster", "search", "--server", "127.0.0.1:1", "x"], &[]);
    assert_eq!(out.status.code(), Some(1));
    // With --json, a failure says so on standard output too, as a record.
    for args in [
        &["get", "--json", "http://127.0.0.1:1/get/1/x"][..],
        &["get", "--json", "--peer", "127.0.0.1:1", "x"],
    ] {
        let out = servent(args, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let last: Download = record(text.lines().last().unwrap_or_default(), "download");
        assert_eq!(last.state, DownloadState::Failed, "{text}");
        assert!(last.error.is_some_and(|e| !e.is_empty()), "{text}");
    }
}

#[test]
fn bad_log_filter_is_reported() {
    let out = servent(&["--log", "servent=[", "index"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad log filter"));
}

#[test]
fn logs_are_plain_off_a_terminal_or_json() {
    let unreachable = ["napster", "search", "--server", "127.0.0.1:1", "x"];
    // Standard error is a pipe here: no colour codes.
    let out = servent(&[&["-v"][..], &unreachable].concat(), &[]);
    let err = stderr(&out);
    assert!(err.contains("starting") && !err.contains('\x1b'), "{err:?}");
    // --log-format json: every log line is a JSON object.
    let out = servent(
        &[&["-v", "--log-format", "json"][..], &unreachable].concat(),
        &[],
    );
    let err = stderr(&out);
    let logs: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["level"] == "DEBUG" && l["fields"]["message"] == "starting"),
        "{err}"
    );
}

/// A node sharing `dir`, and its address.
fn node(dir: &Path, data: &Path) -> (Child, String) {
    let dir = dir.display().to_string();
    let data = data.display().to_string();
    start(cmd(
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--share",
            &dir,
            "--data-dir",
            &data,
            "--json",
            "-q",
        ],
        &[],
    ))
}

/// `servent search --json` through `addr` until it finds something with a
/// SHA-1 (hashing runs in the background).
fn search_until_hashed(addr: &str, words: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let args = ["search", "--peer", addr, "--timeout", "1", "--json", words];
        let out = servent(&args, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.lines().any(|l| record::<Hit>(l, "hit").urn.is_some()) {
            return text;
        }
        assert!(Instant::now() < deadline, "no hashed hit: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn names_from_the_network_cannot_drive_the_terminal() {
    let share = Dir::new("cli-escape-share");
    let data = Dir::new("cli-escape-data");
    let evil = "\x1b[31mred\x1b[0m\tcolumn\u{9b}2J.txt";
    share.file(evil, b"red alert");
    let (child, addr) = node(&share.0, &data.0);
    // JSON keeps the name exact.
    let text = search_until_hashed(&addr, "column");
    let hit: Hit = record(text.lines().next().unwrap(), "hit");
    assert_eq!(hit.name, evil);
    assert_eq!(hit.network, servent::output::Network::Gnutella);
    assert_eq!(hit.size, 9);
    assert!(hit.gnutella.is_some() && hit.napster.is_none());
    // Tab-separated (stdout is a pipe): escaped, four columns.
    let out = servent(
        &["search", "--peer", &addr, "--timeout", "2", "column"],
        &[],
    );
    stop(child);
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        !text.contains('\x1b') && !text.contains('\u{9b}'),
        "{text:?}"
    );
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no hit: {}", stderr(&out)));
    let cols: Vec<&str> = line.split('\t').collect();
    assert_eq!(cols.len(), 4, "{line:?}");
    assert_eq!(cols[0], "\\x1b[31mred\\x1b[0m\\x09column\\x9b2J.txt");
}

#[test]
fn get_prints_download_records() {
    let share = Dir::new("cli-get-share");
    let data = Dir::new("cli-get-data");
    let out_dir = Dir::new("cli-get-out");
    share.file("song.ogg", &common::pattern(100_000, 3));
    let (child, addr) = node(&share.0, &data.0);
    let text = search_until_hashed(&addr, "song");
    let hit: Hit = record(text.lines().next().unwrap(), "hit");
    let urn = hit.urn.unwrap();
    let url = format!("http://{addr}/uri-res/N2R?{urn}");
    let out = common::servent_cmd(&["get", "--json", "-o", "got.ogg", &url], &out_dir.0)
        .output()
        .unwrap();
    stop(child);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let records: Vec<Download> = text.lines().map(|l| record(l, "download")).collect();
    let last = records.last().unwrap();
    assert_eq!(last.state, DownloadState::Done, "{text}");
    assert_eq!(last.urn.as_deref(), Some(urn.as_str()));
    assert_eq!((last.size, last.done), (Some(100_000), 100_000));
    assert_eq!(last.path.as_deref(), Some("got.ogg"));
    assert_eq!(last.sources.iter().map(|s| s.bytes).sum::<u64>(), 100_000);
    assert!(
        records[..records.len() - 1]
            .iter()
            .all(|r| r.state == DownloadState::Running),
        "{text}"
    );
    assert_eq!(
        std::fs::read(out_dir.0.join("got.ogg")).unwrap(),
        common::pattern(100_000, 3)
    );
}

/// The config files the README and the spec show are accepted as written.
#[test]
fn documented_config_files_are_valid() {
    let dir = Dir::new("cli-docs");
    for doc in ["README.md", "protocol-spec/command-line.md"] {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc)).unwrap();
        let mut blocks = 0;
        for block in text.split("```toml\n").skip(1) {
            let toml = block.split("```").next().unwrap();
            let file = write_config(&dir, toml);
            let out = servent(&["--config", &file, "config", "show"], &[]);
            assert!(out.status.success(), "{doc}: {}", stderr(&out));
            assert!(String::from_utf8_lossy(&out.stdout).contains("file ("));
            blocks += 1;
        }
        assert!(blocks > 0, "{doc} shows no config file");
    }
}

/// `config show` says a password is set, never what it is.
#[test]
fn config_show_hides_the_password() {
    let dir = Dir::new("cli-pw");
    let file = write_config(&dir, "[napster.share]\npassword = 'from-the-file'\n");
    for env in [
        &[][..],
        &[("SERVENT_NAPSTER_SHARE_PASSWORD", "from-the-env")][..],
    ] {
        for json in [true, false] {
            let mut args = vec!["--config", &file, "config", "show"];
            if json {
                args.push("--json");
            }
            args.extend(["napster", "share"]);
            let out = servent(&args, env);
            assert!(out.status.success(), "{}", stderr(&out));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("(hidden)") && !text.contains("from-the"),
                "{text}"
            );
        }
    }
}
