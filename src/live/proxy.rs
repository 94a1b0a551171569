//! The PROXY protocol (v1 text, v2 binary; HAProxy's specification) on the
//! RTMP listener: a layer-4 balancer in front of the nodes prefixes each
//! connection with the creator's real address, so the wrong-key throttle,
//! the pending-connection limits and the logs see the creator rather than
//! the balancer. Headers are parsed by the `ppp` crate.
//!
//! A header is required from the configured balancer addresses
//! (`live.proxy_protocol_from`) and refused from anybody else: a creator
//! cannot claim another address by sending one.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use ppp::{HeaderResult, v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature, the first 12 bytes of a binary header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included.
const V1_MAX: usize = 107;
/// A v2 header's fixed part: signature, version and command, family, length.
const V2_FIXED: usize = 16;
/// The longest v2 header this listener takes (addresses plus a few TLVs).
const V2_MAX: usize = 16 + 536;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("a PROXY header from {0}, which is not a configured balancer")]
    Untrusted(IpAddr),
    #[error("no valid PROXY header from the balancer: {0}")]
    Malformed(String),
    #[error("the connection closed before its PROXY header ended")]
    Closed,
}

/// Whether `peer` is one of the balancers.
pub fn trusted(proxies: &[IpNet], peer: IpAddr) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    proxies.iter().any(|net| net.contains(&peer))
}

/// The address a connection speaks for: from its PROXY header when `peer`
/// is a balancer (the header is consumed; what follows is the client's), or
/// `peer` itself. The caller bounds the wait.
pub async fn client_address(
    stream: &mut TcpStream,
    peer: SocketAddr,
    proxies: &[IpNet],
) -> Result<SocketAddr, ProxyError> {
    if !trusted(proxies, peer.ip()) {
        // An RTMP handshake starts with 0x03; a header with `P` or `\r`.
        let mut first = [0u8; 1];
        let n = stream
            .peek(&mut first)
            .await
            .map_err(|_| ProxyError::Closed)?;
        if n == 1 && matches!(first[0], b'P' | b'\r') {
            return Err(ProxyError::Untrusted(peer.ip()));
        }
        return Ok(peer);
    }
    let header = read_header(stream).await?;
    parse(&header, peer)
}

/// Reads exactly one header off the stream, never a byte of what follows.
async fn read_header(stream: &mut TcpStream) -> Result<Vec<u8>, ProxyError> {
    let mut peeked = vec![0u8; V2_MAX];
    loop {
        let n = stream
            .peek(&mut peeked)
            .await
            .map_err(|_| ProxyError::Closed)?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        let seen = &peeked[..n];
        let length = if seen.starts_with(V2_SIGNATURE) || V2_SIGNATURE.starts_with(seen) {
            (n >= V2_FIXED)
                .then(|| V2_FIXED + usize::from(u16::from_be_bytes([seen[14], seen[15]])))
        } else {
            match seen.windows(2).position(|w| w == b"\r\n") {
                Some(at) => Some(at + 2),
                None if n >= V1_MAX => {
                    return Err(ProxyError::Malformed("no CRLF in 107 bytes".into()));
                }
                None => None,
            }
        };
        match length {
            Some(len) if len > V2_MAX => {
                return Err(ProxyError::Malformed(format!("a {len}-byte header")));
            }
            Some(len) if len <= n => {
                let mut header = vec![0u8; len];
                stream
                    .read_exact(&mut header)
                    .await
                    .map_err(|_| ProxyError::Closed)?;
                return Ok(header);
            }
            // More is on its way: wait for it (peek returns at once while
            // bytes are buffered).
            _ => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
}

/// The source address a complete header names (`peer` for a balancer's own
/// health check: v2 `LOCAL`, v1 `UNKNOWN`).
pub fn parse(header: &[u8], peer: SocketAddr) -> Result<SocketAddr, ProxyError> {
    let malformed = |e: String| ProxyError::Malformed(e);
    match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
            v1::Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
            v1::Addresses::Unknown => peer,
        }),
        HeaderResult::V2(Ok(h)) => {
            if h.command == v2::Command::Local {
                return Ok(peer);
            }
            match h.addresses {
                v2::Addresses::IPv4(a) => Ok(SocketAddr::from((a.source_address, a.source_port))),
                v2::Addresses::IPv6(a) => Ok(SocketAddr::from((a.source_address, a.source_port))),
                v2::Addresses::Unspecified => Ok(peer),
                v2::Addresses::Unix(_) => Err(malformed("a UNIX socket address".into())),
            }
        }
        HeaderResult::V1(Err(e)) => Err(malformed(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "10.0.0.2:40000".parse().unwrap()
    }

    #[test]
    fn v1_and_v2_headers_name_the_client() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.5 51234 1935\r\n";
        assert_eq!(
            parse(v1, peer()).unwrap(),
            "203.0.113.7:51234".parse().unwrap()
        );
        let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 1935\r\n";
        assert_eq!(
            parse(v6, peer()).unwrap(),
            "[2001:db8::7]:51234".parse().unwrap()
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n", peer()).unwrap(), peer());
        let client: SocketAddr = "198.51.100.9:6000".parse().unwrap();
        let node: SocketAddr = "10.0.0.5:1935".parse().unwrap();
        let v2 = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (client, node),
        )
        .build()
        .unwrap();
        assert_eq!(parse(&v2, peer()).unwrap(), client);
        for bad in [&b"PROXY TCP4 nonsense\r\n"[..], b"GET / HTTP/1.1\r\n"] {
            assert!(
                matches!(parse(bad, peer()), Err(ProxyError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_configured_networks_are_balancers() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(trusted(&nets, "10.0.0.2".parse().unwrap()));
        assert!(trusted(&nets, "::ffff:10.0.0.9".parse().unwrap()));
        assert!(trusted(&nets, "::1".parse().unwrap()));
        assert!(!trusted(&nets, "10.0.1.2".parse().unwrap()));
        assert!(!trusted(&[], "127.0.0.1".parse().unwrap()));
    }
}
