//! The command line as a user meets it: downloads refuse what they cannot fetch,
//! flags come from the environment too, and bad input is a usage error.

use std::process::{Command, Output};

fn servent(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_servent"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Keep the caller's SERVENT_* settings out of the test.
    for (k, _) in std::env::vars() {
        if k.starts_with("SERVENT_") && !env.iter().any(|(e, _)| *e == k) {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("the servent binary runs")
}

#[test]
fn flags_are_read_from_the_environment() {
    // A bad value from the environment is rejected like one on the command line.
    let out = servent(&["run"], &[("SERVENT_LISTEN", "not-an-address")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-address"));
    // Good ones get through to the command (here to the MOTD file it reads first).
    let out = servent(
        &["index"],
        &[
            ("SERVENT_LISTEN", "127.0.0.1:0"),
            ("SERVENT_MOTD", "/nonexistent/motd.txt"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/motd.txt"));
    // --firewalled from the environment: the node says it takes no connections.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_servent"));
    cmd.args(["run", "--listen", "127.0.0.1:0", "-q"])
        .env("SERVENT_FIREWALLED", "true")
        .env(
            "SERVENT_DATA_DIR",
            std::env::temp_dir().join("servent-cli-fw"),
        )
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("the servent binary runs");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.starts_with("firewalled"), "{line}");
    // The verbosity count too: SERVENT_VERBOSE=2 (like -vv) shows debug lines.
    let unreachable = ["napster", "search", "--server", "127.0.0.1:1", "x"];
    let out = servent(&unreachable, &[("SERVENT_VERBOSE", "2")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("starting"));
    let out = servent(&unreachable, &[]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("starting"));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["run", "--max-ttl", "300"],
        &["search"],
        &["search", "--peer", "127.0.0.1:1", "--ttl", "0", "x"],
        &[
            "napster",
            "search",
            "--server",
            "127.0.0.1:1",
            "--type",
            "movie",
            "x",
        ],
        &["napster", "get", "--server", "127.0.0.1:1", "--from", "x"],
    ] {
        let out = servent(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn search_reports_an_unreachable_peer() {
    let out = servent(
        &["search", "--peer", "127.0.0.1:1", "--timeout", "2", "x"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[test]
fn get_refuses_what_it_cannot_download() {
    for (args, want) in [
        (
            &[
                "get",
                "magnet:?xt=urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5",
            ][..],
            "names no source",
        ),
        (&["get", "magnet:?dn=x"], "no urn:sha1:"),
        (&["get", "ftp://example.org/x"], "not an http:// URL"),
        (&["get", "a", "b"], "one URL or magnet"),
        (
            &["get", "http://127.0.0.1:1/get/1/x"],
            "no source could be reached",
        ),
    ] {
        let out = servent(args, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn bad_log_filter_is_reported() {
    let out = servent(&["--log", "servent=[", "index"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad log filter"));
}
