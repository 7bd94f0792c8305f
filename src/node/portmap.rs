//! Port mapping: a node listening on a private address asks the default
//! gateway (its home router) to forward our port, TCP and UDP, from its
//! public address, by PCP or NAT-PMP (the `crab_nat` client). The mapping is
//! renewed at half its lifetime and removed at shutdown. Whether it worked
//! is not taken on trust: peers' connect-backs decide (`core::reach`).
//! A failure is said once; the node runs on without.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::time::Duration;

use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, TimeoutConfig};
use tokio_util::sync::CancellationToken;

/// The lifetime we ask for (the gateway may grant less).
const LIFETIME_SECS: u32 = 3600;
/// Never renew more often than this, whatever the gateway granted.
const MIN_RENEW: Duration = Duration::from_secs(60);

fn timeouts() -> TimeoutConfig {
    TimeoutConfig {
        initial_timeout: Duration::from_millis(250),
        max_retries: 3,
        max_retry_timeout: Some(Duration::from_secs(2)),
    }
}

/// Whether `ip` is a private (RFC 1918) or carrier-grade NAT (100.64/10)
/// address: one behind a NAT, where mapping helps.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(_) => false,
    }
}

/// The default IPv4 gateway in a `/proc/net/route` table: the line whose
/// destination and mask are 0 and whose flags have RTF_GATEWAY (0x2); the
/// addresses are hexadecimal in the machine's byte order.
pub fn default_gateway(route_table: &str) -> Option<Ipv4Addr> {
    route_table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dest, gw, flags, mask) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(7)?);
        let flags = u32::from_str_radix(flags, 16).ok()?;
        if *dest != "00000000" || *mask != "00000000" || flags & 0x2 == 0 {
            return None;
        }
        let gw = u32::from_str_radix(gw, 16).ok()?;
        Some(Ipv4Addr::from(gw.to_ne_bytes())).filter(|g| !g.is_unspecified())
    })
}

/// The address we reach `gateway` from (a connected UDP socket's local end:
/// no datagram is sent).
fn source_towards(gateway: Ipv4Addr) -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((gateway, 5351)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// Maps `listen`'s port on the default gateway when our address there is a
/// private one, keeps the mappings until `cancel`, then removes them.
pub async fn run(listen: SocketAddr, udp: bool, cancel: CancellationToken) {
    let Some(gateway) = std::fs::read_to_string("/proc/net/route")
        .ok()
        .as_deref()
        .and_then(default_gateway)
    else {
        tracing::debug!("port mapping: no default gateway");
        return;
    };
    let client = match listen.ip() {
        ip if ip.is_unspecified() => match source_towards(gateway) {
            Some(ip) => ip,
            None => return,
        },
        ip => ip,
    };
    if !is_private(client) {
        tracing::debug!(%client, "port mapping: our address is not behind a NAT");
        return;
    }
    let Some(port) = NonZeroU16::new(listen.port()) else {
        return;
    };
    let mut protocols = vec![InternetProtocol::Tcp];
    if udp {
        protocols.push(InternetProtocol::Udp);
    }
    let options = PortMappingOptions {
        external_port: Some(port),
        lifetime_seconds: Some(LIFETIME_SECS),
        timeout_config: Some(timeouts()),
    };
    let mut mappings = Vec::new();
    for p in protocols {
        let made = tokio::select! {
            m = PortMapping::new(IpAddr::V4(gateway), client, p, port, options) => m,
            _ = cancel.cancelled() => return,
        };
        match made {
            Ok(m) => {
                if m.external_port() != port {
                    tracing::warn!(
                        %gateway,
                        ours = port.get(),
                        theirs = m.external_port().get(),
                        "port mapping: the router forwards another port than ours; peers will not find us there"
                    );
                }
                tracing::info!(%gateway, protocol = ?p, port = m.external_port().get(), lifetime = m.lifetime(), "port mapped");
                mappings.push(m);
            }
            Err(e) => {
                // Said once: the router offers neither protocol, or refused.
                tracing::warn!(%gateway, error = %e, "port mapping failed (NAT-PMP/PCP); peers may not reach us unless the port is forwarded by hand");
                break;
            }
        }
    }
    if mappings.is_empty() {
        return;
    }
    loop {
        let next = mappings
            .iter()
            .map(|m| Duration::from_secs(u64::from(m.lifetime()) / 2))
            .min()
            .unwrap_or(MIN_RENEW)
            .max(MIN_RENEW);
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = cancel.cancelled() => break,
        }
        for m in &mut mappings {
            if let Err(e) = m.renew().await {
                tracing::debug!(%gateway, error = %e, "port mapping not renewed");
            }
        }
    }
    for m in mappings {
        if let Err((e, _)) = m.try_drop().await {
            tracing::debug!(%gateway, error = %e, "port mapping not removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_gateway_is_read_from_the_route_table() {
        let gw = u32::from_ne_bytes([192, 168, 1, 1]);
        let table = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             eth0\t00000000\t{gw:08X}\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        );
        assert_eq!(default_gateway(&table), Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert_eq!(default_gateway("Iface\n"), None);
        assert_eq!(
            default_gateway("Iface\nlo 00000000 zz 0003 0 0 0 00000000\n"),
            None
        );
        assert!(is_private("10.1.2.3".parse().unwrap()));
        assert!(is_private("100.64.0.1".parse().unwrap()));
        assert!(!is_private("127.0.0.1".parse().unwrap()));
        assert!(!is_private("11.0.0.1".parse().unwrap()));
    }
}
