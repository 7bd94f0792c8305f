//! The command line as a user meets it: subcommands that are not built yet say so
//! and fail, flags come from the environment too, and bad input is a usage error.

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
fn unavailable_subcommands_say_so_and_fail() {
    for args in [
        &["run", "--share", "/tmp"][..],
        &["search", "--peer", "127.0.0.1:1", "word"],
        &[
            "get",
            "magnet:?xt=urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5",
        ],
        &["index"],
        &["napster", "search", "--server", "127.0.0.1:1", "word"],
    ] {
        let out = servent(args, &[]);
        assert_eq!(out.status.code(), Some(69), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not available yet"), "{args:?}: {err}");
    }
}

#[test]
fn flags_are_read_from_the_environment() {
    // A bad value from the environment is rejected like one on the command line.
    let out = servent(&["run"], &[("SERVENT_LISTEN", "not-an-address")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-address"));
    // A good one gets through to the (not yet available) command.
    let out = servent(
        &["run"],
        &[("SERVENT_LISTEN", "127.0.0.1:0"), ("SERVENT_MAX_TTL", "4")],
    );
    assert_eq!(out.status.code(), Some(69));
    // The verbosity count too: -vv (or SERVENT_VERBOSE=2) shows debug lines.
    let out = servent(&["index"], &[("SERVENT_VERBOSE", "2")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("starting"));
    let out = servent(&["index"], &[]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("starting"));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["run", "--max-ttl", "300"],
        &["search"],
    ] {
        let out = servent(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn bad_log_filter_is_reported() {
    let out = servent(&["--log", "servent=[", "index"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad log filter"));
}
