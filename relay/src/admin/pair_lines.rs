//! The exact `ferry pair` lines `ferry-relay pair` prints: one per address
//! its pairing listener answers on inside the LAN networks.

use std::net::{IpAddr, SocketAddr};

use ferry_protocol::pairing::DEFAULT_PAIR_PORT;

use crate::net::IpNet;

/// The `ferry pair` command an endpoint runs for each address the pairing
/// listener `listen` answers on: the listener's own address when it is
/// bound to one, else the host's `interfaces` inside `lan` (a loopback
/// address only when there is no other). The port is left out when it is
/// the default one.
pub fn pair_lines(
    listen: SocketAddr,
    lan: &[IpNet],
    interfaces: &[IpAddr],
    code: &str,
) -> Vec<String> {
    let addresses: Vec<IpAddr> = if listen.ip().is_unspecified() {
        let usable = |ip: &&IpAddr| {
            (listen.is_ipv6() || ip.is_ipv4())
                && !is_link_local(**ip)
                && lan.iter().any(|net| net.contains(**ip))
        };
        let wide: Vec<IpAddr> = interfaces
            .iter()
            .filter(usable)
            .filter(|ip| !ip.is_loopback())
            .copied()
            .collect();
        if wide.is_empty() {
            interfaces.iter().filter(usable).copied().collect()
        } else {
            wide
        }
    } else {
        vec![listen.ip()]
    };
    addresses
        .into_iter()
        .map(|ip| {
            let at = SocketAddr::new(ip, listen.port());
            let relay = match (listen.port() == DEFAULT_PAIR_PORT, ip) {
                (true, IpAddr::V6(v6)) => format!("[{v6}]"),
                (true, IpAddr::V4(v4)) => v4.to_string(),
                (false, _) => at.to_string(),
            };
            format!("ferry pair --relay {relay} --code {code}")
        })
        .collect()
}

/// An IPv6 link-local address: it needs a scope an endpoint cannot guess.
fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// The host's interface addresses (none when they cannot be listed).
pub fn interface_addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            tracing::warn!("the host's addresses could not be listed: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_lines_name_the_lan_addresses_and_the_port_only_when_not_the_default() {
        let lan = IpNet::default_lan();
        let host = ips(&[
            "127.0.0.1",
            "192.168.1.10",
            "203.0.113.5",
            "fe80::1",
            "fd00::7",
            "::1",
        ]);
        let any4: SocketAddr = "0.0.0.0:7331".parse().unwrap();
        assert_eq!(
            pair_lines(any4, &lan, &host, "4-7291-3385"),
            vec!["ferry pair --relay 192.168.1.10 --code 4-7291-3385"]
        );
        let any6: SocketAddr = "[::]:7400".parse().unwrap();
        let lines = pair_lines(any6, &lan, &host, "C");
        assert!(
            lines.contains(&"ferry pair --relay 192.168.1.10:7400 --code C".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"ferry pair --relay [fd00::7]:7400 --code C".to_string()),
            "{lines:?}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("203.0.113.5") || l.contains("fe80")),
            "{lines:?}"
        );
        // Bound to one address: that one, loopback or not.
        let one: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert_eq!(
            pair_lines(one, &lan, &host, "C"),
            vec!["ferry pair --relay 127.0.0.1:40001 --code C"]
        );
        // Only loopback on the LAN: loopback it is.
        assert_eq!(
            pair_lines(any4, &lan, &ips(&["127.0.0.1", "203.0.113.5"]), "C"),
            vec!["ferry pair --relay 127.0.0.1 --code C"]
        );
    }
}
