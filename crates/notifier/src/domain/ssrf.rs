//! The SSRF guard: channel URLs must not make the notifier call into the network it runs in.
//! Every address a host resolves to is checked, at configuration time and again when connecting
//! (so a DNS answer that changes later cannot slip through); loopback, private, link-local,
//! unique-local, shared, multicast and reserved ranges are refused unless a configured network
//! allows them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is not a public unicast address, or `None` when it is.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast()
        || a >= 240
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || ip.is_documentation()
    {
        Some("reserved")
    } else {
        None
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [_, _, _, _, _, _, hi, lo] = segments;
        return v4_reason(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if segments[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if segments[0] & 0xfe00 == 0xfc00 || segments[0] & 0xffc0 == 0xfec0 {
        Some("private (unique-local)")
    } else if segments[0] == 0x2001 && segments[1] == 0x0db8 {
        Some("reserved")
    } else {
        None
    }
}

/// Accepts `ip` when it is public or inside one of `allowed`.
pub fn check(ip: IpAddr, allowed: &[IpNet]) -> Result<(), String> {
    let canonical = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match non_public_reason(canonical) {
        None => Ok(()),
        Some(_) if allowed.iter().any(|net| net.contains(&canonical) || net.contains(&ip)) => Ok(()),
        Some(reason) => Err(format!(
            "{ip} is a {reason} address; allow it with notifier.allowed_private_networks if this is intended"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_ranges_are_refused() {
        for (address, reason) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd00::1", "private (unique-local)"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
        ] {
            assert_eq!(non_public_reason(ip(address)), Some(reason), "{address}");
            assert!(check(ip(address), &[]).is_err(), "{address}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "172.32.0.1"] {
            assert_eq!(non_public_reason(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn configured_networks_are_allowed() {
        let allowed: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap(), "10.20.0.0/16".parse().unwrap()];
        assert!(check(ip("127.0.0.1"), &allowed).is_ok());
        assert!(check(ip("::ffff:127.0.0.1"), &allowed).is_ok());
        assert!(check(ip("10.20.3.4"), &allowed).is_ok());
        let err = check(ip("10.21.3.4"), &allowed).unwrap_err();
        assert!(err.contains("private") && err.contains("allowed_private_networks"), "{err}");
        assert!(check(ip("::1"), &allowed).is_err());
    }
}
