//! The commands that talk to a running node through its control API:
//! `status`, `peers`, `downloads`, `search --node` and `get --node`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use hyper::Method;
use servent::api::client::Client;
use servent::cli::{DownloadsAction, DownloadsArgs, PeersArgs, StatusArgs};
use servent::output::{self, Download, List};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

pub fn status(args: StatusArgs) -> Result<ExitCode> {
    let c = Client::locate(args.api, args.data_dir);
    let s: output::Status = runtime()?.block_on(c.record(Method::GET, "/api/v1/status", None))?;
    if args.json {
        println!("{}", output::json_line(&s));
        return Ok(ExitCode::SUCCESS);
    }
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "role\t{}", s.role);
    let _ = writeln!(o, "uptime\t{} s", s.uptime_secs);
    let _ = writeln!(
        o,
        "listen\t{}",
        s.listen.as_deref().unwrap_or("(firewalled)")
    );
    let _ = writeln!(
        o,
        "links\t{} ({} to ultrapeers, {} leaves, {} mesh)",
        s.links.total, s.links.to_ultrapeers, s.links.leaves, s.links.mesh
    );
    let _ = writeln!(
        o,
        "library\t{} files, {} bytes, {} to hash",
        s.library.files, s.library.bytes, s.library.hashing_pending
    );
    let _ = writeln!(
        o,
        "bandwidth\tgnutella in {} out {}, uploaded {}, downloaded {} bytes",
        s.bandwidth.gnutella_in, s.bandwidth.gnutella_out, s.bandwidth.upload, s.bandwidth.download
    );
    let _ = writeln!(o, "uploads\t{}/{} slots", s.uploads.active, s.uploads.slots);
    let _ = writeln!(
        o,
        "downloads\t{} running, {} queued, {} paused (at most {} at once)",
        s.downloads.running, s.downloads.queued, s.downloads.paused, s.downloads.max_running
    );
    let _ = writeln!(o, "hosts\t{}", s.hosts);
    let _ = writeln!(
        o,
        "horizon\t{} hosts, {} files, {} KiB (HSEP)",
        s.horizon.hosts, s.horizon.files, s.horizon.kib
    );
    Ok(ExitCode::SUCCESS)
}

pub fn peers(args: PeersArgs) -> Result<ExitCode> {
    let c = Client::locate(args.api, args.data_dir);
    let l: List<output::Peer> =
        runtime()?.block_on(c.record(Method::GET, "/api/v1/peers", None))?;
    let mut o = std::io::stdout().lock();
    if !args.json {
        let _ = writeln!(o, "ID\tADDRESS\tKIND\tAGE\tIN\tOUT\tDROPPED\tUSER-AGENT");
    }
    for p in l.items {
        if args.json {
            let _ = writeln!(o, "{}", output::json_line(&p));
        } else {
            let drops: u64 = p.drops.values().sum();
            let _ = writeln!(
                o,
                "{}\t{}\t{}\t{}s\t{}\t{}\t{}\t{}",
                p.id,
                p.addr,
                p.kind,
                p.age_secs,
                p.msgs_in,
                p.msgs_out,
                drops,
                output::escape(p.user_agent.as_deref().unwrap_or("-"))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_download(d: &Download, json: bool) {
    if json {
        println!("{}", output::json_line(d));
    } else {
        let state = serde_json::to_value(d.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let size = d.size.map_or("?".to_string(), |s| s.to_string());
        println!(
            "{}\t{}\t{}/{}\t{}\t{}",
            d.id.map_or("-".to_string(), |i| i.to_string()),
            state,
            d.done,
            size,
            output::escape(d.name.as_deref().unwrap_or("-")),
            output::escape(d.error.as_deref().unwrap_or(""))
        );
    }
}

/// The request body that hands `target` (a URL or magnet link) to the queue.
fn add_body(target: &str, name: Option<&str>) -> serde_json::Value {
    let mut body = serde_json::Map::new();
    let key = if target.len() >= 7 && target[..7].eq_ignore_ascii_case("magnet:") {
        "magnet"
    } else {
        "url"
    };
    body.insert(key.into(), target.into());
    if let Some(n) = name {
        body.insert("name".into(), n.into());
    }
    serde_json::Value::Object(body)
}

/// Hands a URL or magnet link to the node's queue; prints the queued record.
pub fn add(c: &Client, target: &str, name: Option<&str>, json: bool) -> Result<ExitCode> {
    let d: Download = runtime()?.block_on(c.record(
        Method::POST,
        "/api/v1/downloads",
        Some(add_body(target, name)),
    ))?;
    print_download(&d, json);
    Ok(ExitCode::SUCCESS)
}

pub fn downloads(args: DownloadsArgs) -> Result<ExitCode> {
    let c = Client::locate(args.api, args.data_dir.clone());
    let id = || -> Result<u64> {
        match args.target.as_deref().map(str::parse::<u64>) {
            Some(Ok(i)) => Ok(i),
            _ => Err(Box::new(crate::Usage(
                "give the download's id (see `servent downloads`)".into(),
            ))),
        }
    };
    let rt = runtime()?;
    match args.action {
        DownloadsAction::List => {
            let l: List<Download> =
                rt.block_on(c.record(Method::GET, "/api/v1/downloads", None))?;
            if !args.json {
                println!("ID\tSTATE\tDONE/SIZE\tNAME\tERROR");
            }
            for d in &l.items {
                print_download(d, args.json);
            }
        }
        DownloadsAction::Add => {
            let Some(t) = &args.target else {
                return Err(Box::new(crate::Usage(
                    "give a URL or magnet link to add".into(),
                )));
            };
            drop(rt);
            return add(&c, t, args.name.as_deref(), args.json);
        }
        DownloadsAction::Pause | DownloadsAction::Resume => {
            let verb = if args.action == DownloadsAction::Pause {
                "pause"
            } else {
                "resume"
            };
            let d: Download = rt.block_on(c.record(
                Method::POST,
                &format!("/api/v1/downloads/{}/{verb}", id()?),
                None,
            ))?;
            print_download(&d, args.json);
        }
        DownloadsAction::Cancel => {
            let path = format!(
                "/api/v1/downloads/{}?delete_part={}",
                id()?,
                args.delete_part
            );
            rt.block_on(c.call(Method::DELETE, &path, None))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `servent search --node`: the node searches its links; hits are printed as
/// they come until `timeout` or `max_results`, then the search is stopped.
pub fn search(
    c: &Client,
    words: &str,
    timeout: Duration,
    max_results: usize,
    mut on_hit: impl FnMut(&output::Hit),
) -> Result<usize> {
    runtime()?.block_on(async {
        let s: output::Search = c
            .record(
                Method::POST,
                "/api/v1/searches",
                Some(serde_json::json!({ "words": words })),
            )
            .await?;
        let mut events = c
            .events(&format!("/api/v1/searches/{}/events", s.id))
            .await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut count = 0;
        while count < max_results {
            let next = match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(n) => n?,
                Err(_) => break,
            };
            let Some((name, data)) = next else { break };
            match name.as_str() {
                "hit" => {
                    if let Ok(h) = serde_json::from_str::<output::Versioned<output::Hit>>(&data) {
                        on_hit(&h.record);
                        count += 1;
                    }
                }
                "end" => break,
                _ => {}
            }
        }
        let _ = c
            .call(Method::DELETE, &format!("/api/v1/searches/{}", s.id), None)
            .await;
        Ok(count)
    })
}
