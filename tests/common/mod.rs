//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use servent::output::{Download, DownloadState, Versioned};

/// A temporary directory, removed when dropped.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "servent-test-{tag}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    /// Writes `content` to `name` below the directory (creating parents).
    pub fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Creates the subdirectory `name`.
    pub fn sub(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub mod raw;

/// Deterministic bytes that differ at every offset of interest.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Runs `servent get --json -o file.bin URL` in `out` and kills it at the
/// first progress line that comes while its state file (`file.bin.part.state`)
/// satisfies `mid`. False when the download ended first (the test then cannot
/// check a resume).
pub fn get_killed_when(url: &str, out: &std::path::Path, mid: impl Fn(&str) -> bool) -> bool {
    use std::io::{BufRead, BufReader};
    let mut child = servent_cmd(&["get", "--json", "-o", "file.bin", url], out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let state = out.join("file.bin.part.state");
    let mut killed_mid = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let blocks = std::fs::read_to_string(&state).unwrap_or_default();
        let record = download_record(&line);
        if record.state == DownloadState::Running && mid(&blocks) {
            killed_mid = true;
            break;
        }
        if record.state == DownloadState::Done {
            eprintln!("finished before the kill; last state: {blocks}");
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    killed_mid
}

/// One line of `servent get --json`: a download record of version 1.
pub fn download_record(line: &str) -> Download {
    let r: Versioned<Download> =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!((r.v, r.kind.as_str()), (1, "download"), "{line}");
    r.record
}

/// The `servent` binary with `args`, run in `cwd`, without any `SERVENT_*`
/// setting of the environment the tests run in, nor the user's config file.
pub fn servent_cmd(args: &[&str], cwd: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_servent"));
    cmd.args(args).current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("SERVENT_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("SERVENT_CONFIG", NO_CONFIG);
    cmd
}

/// An empty config file, so the user's own stays out of the tests.
pub const NO_CONFIG: &str = "/dev/null";

/// The benches' seeded generator: the same graph and names on every run.
#[path = "../../benches/common/rng.rs"]
mod rng;
#[allow(unused_imports)]
pub use rng::Rng;

/// Runs `servent` with `args` in `cwd` to its end, on a blocking thread so
/// that the servers the test runs on the runtime go on answering it.
pub async fn servent_output(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let cwd = cwd.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        servent_cmd(&args, &cwd).output().expect("servent runs")
    })
    .await
    .expect("the command's thread")
}
