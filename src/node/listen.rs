//! Listening on both address families, as gtk-gnutella does.
//!
//! A wildcard listen address takes peers of both families: `[::]:port` is one
//! dual-stack socket (IPv4 peers arrive as IPv4-mapped addresses, which
//! [`canonical`] turns back into IPv4), and `0.0.0.0:port` gets a second,
//! IPv6-only socket on the same port beside its IPv4 one when the machine has
//! IPv6. A specific address (`127.0.0.1:0`, `[::1]:0`) is listened on alone.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Connections waiting to be accepted, per socket.
const BACKLOG: i32 = 1024;

/// The sockets a node accepts on, and which families they take.
pub struct Listeners {
    /// The socket of the configured address first.
    pub sockets: Vec<TcpListener>,
    /// The address the first socket is bound to (its port is the node's).
    pub local: SocketAddr,
    /// IPv4 peers can connect.
    pub ipv4: bool,
    /// IPv6 peers can connect.
    pub ipv6: bool,
}

/// `addr` with an IPv4-mapped IPv6 address written as IPv4 (what a dual-stack
/// socket reports for an IPv4 peer).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Binds the node's listening sockets for `addr` (see the module text).
pub fn tcp(addr: SocketAddr) -> io::Result<Listeners> {
    match addr.ip() {
        IpAddr::V6(ip) if ip.is_unspecified() => {
            let socket = tcp_socket(addr, Some(false))?;
            let local = socket.local_addr()?;
            Ok(Listeners {
                sockets: vec![socket],
                local,
                ipv4: true,
                ipv6: true,
            })
        }
        IpAddr::V4(ip) if ip.is_unspecified() => {
            let socket = tcp_socket(addr, None)?;
            let local = socket.local_addr()?;
            let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), local.port());
            let mut sockets = vec![socket];
            match tcp_socket(v6, Some(true)) {
                Ok(s) => sockets.push(s),
                Err(e) => tracing::info!(error = %e, "not listening on IPv6"),
            }
            let ipv6 = sockets.len() == 2;
            Ok(Listeners {
                sockets,
                local,
                ipv4: true,
                ipv6,
            })
        }
        ip => {
            let socket = tcp_socket(addr, None)?;
            let local = socket.local_addr()?;
            let v4 = ip.to_canonical().is_ipv4();
            Ok(Listeners {
                sockets: vec![socket],
                local,
                ipv4: v4,
                ipv6: !v4,
            })
        }
    }
}

/// A listening TCP socket on `addr`; for an IPv6 one, `only_v6` sets whether
/// it refuses IPv4 peers (`None`: the system's default).
fn tcp_socket(addr: SocketAddr, only_v6: Option<bool>) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let (SocketAddr::V6(_), Some(only)) = (addr, only_v6) {
        socket.set_only_v6(only)?;
    }
    // As tokio's own `TcpListener::bind` does: a restarted node gets its port
    // back while old connections linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// UDP sockets for `addr` by the same rule as [`tcp`]: one dual-stack socket
/// for `[::]`, an IPv4 one and (when possible) an IPv6-only one for
/// `0.0.0.0`, else the one address. For the UDP side of the Gnutella port.
pub fn udp(addr: SocketAddr) -> io::Result<Vec<std::net::UdpSocket>> {
    let one = |a: SocketAddr, only_v6: Option<bool>| -> io::Result<std::net::UdpSocket> {
        let socket = Socket::new(Domain::for_address(a), Type::DGRAM, Some(Protocol::UDP))?;
        if let (SocketAddr::V6(_), Some(only)) = (a, only_v6) {
            socket.set_only_v6(only)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&a.into())?;
        Ok(socket.into())
    };
    match addr.ip() {
        IpAddr::V6(ip) if ip.is_unspecified() => Ok(vec![one(addr, Some(false))?]),
        IpAddr::V4(ip) if ip.is_unspecified() => {
            let first = one(addr, None)?;
            let port = first.local_addr()?.port();
            let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
            let mut v = vec![first];
            if let Ok(s) = one(v6, Some(true)) {
                v.push(s);
            }
            Ok(v)
        }
        _ => Ok(vec![one(addr, None)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_ipv6() -> bool {
        std::net::TcpListener::bind("[::1]:0").is_ok()
    }

    #[test]
    fn mapped_addresses_read_as_ipv4() {
        let a: SocketAddr = "[::ffff:10.1.2.3]:6346".parse().unwrap();
        assert_eq!(canonical(a), "10.1.2.3:6346".parse::<SocketAddr>().unwrap());
        let b: SocketAddr = "[::1]:6346".parse().unwrap();
        assert_eq!(canonical(b), b);
    }

    #[tokio::test]
    async fn wildcards_take_both_families() {
        if !has_ipv6() {
            eprintln!("skipped: this machine has no IPv6 loopback");
            return;
        }
        for wildcard in ["0.0.0.0:0", "[::]:0"] {
            // The IPv6 twin of a fresh IPv4 port may be taken by another
            // program's IPv6-only socket: another port is tried then.
            let l = (0..5)
                .map(|_| tcp(wildcard.parse().unwrap()).unwrap())
                .find(|l| l.ipv6)
                .expect("an IPv6 socket beside the IPv4 one");
            assert!(l.ipv4 && l.ipv6, "{wildcard}");
            let port = l.local.port();
            for to in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
                let c = tokio::net::TcpStream::connect(&to).await.unwrap();
                let mut accepted = None;
                for s in &l.sockets {
                    if let Ok(Ok((_, from))) =
                        tokio::time::timeout(std::time::Duration::from_millis(200), s.accept())
                            .await
                    {
                        accepted = Some(canonical(from));
                        break;
                    }
                }
                assert_eq!(
                    accepted.map(|a| a.ip()),
                    Some(c.local_addr().unwrap().ip()),
                    "{wildcard} took {to}"
                );
            }
        }
        let only6 = tcp("[::1]:0".parse().unwrap()).unwrap();
        assert!(only6.ipv6 && !only6.ipv4);
        let only4 = tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(only4.ipv4 && !only4.ipv6 && only4.sockets.len() == 1);
        let u = (0..5)
            .map(|_| udp("0.0.0.0:0".parse().unwrap()).unwrap())
            .find(|u| u.len() == 2)
            .expect("an IPv6 socket beside the IPv4 one");
        assert_eq!(
            u[0].local_addr().unwrap().port(),
            u[1].local_addr().unwrap().port()
        );
    }
}
