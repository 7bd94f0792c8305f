//! Helpers shared by the benches: a counting allocator and a seeded generator.
#![allow(dead_code)]

pub mod load;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The system allocator, counting allocations and live bytes. A bench that wants
/// the counts declares `#[global_allocator] static GLOBAL: Counting = Counting;`.
pub struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations (and reallocations) so far.
pub fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// Bytes allocated and not yet freed.
pub fn live() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

mod rng;
#[allow(unused_imports)]
pub use rng::Rng;

/// The resident size (`VmRSS`) of process `pid` in KiB, where `/proc` says.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `servent run` as the benches start it: no configuration file of the
/// user's, quiet, on a loopback port of the system's choosing (read back with
/// [`listening_addr`] once the child's stdout is piped); the caller adds its
/// own flags.
pub fn servent_run() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_servent"));
    c.args([
        "--config",
        "/dev/null",
        "-q",
        "run",
        "--listen",
        "127.0.0.1:0",
    ]);
    c
}

/// The address a `servent` child process says it listens on (its first line of
/// standard output, `listening on ADDR`); the child's stdout must be piped.
pub fn listening_addr(child: &mut std::process::Child) -> std::net::SocketAddr {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    line.trim()
        .strip_prefix("listening on ")
        .expect("listening on")
        .parse()
        .expect("address")
}
