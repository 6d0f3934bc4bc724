//! Which addresses a fetch may connect to: public unicast only, as Stripe's Smokescreen decides.
//! Every refusal names the address's class, so an operator and a client read why. The node's
//! fetcher applies it to every address it connects to; the hub applies it to the literal addresses
//! of a request's URLs (an image in a chat message), so those are refused before any node is asked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` is not a public address a node may fetch from; `None` if it is one.
pub fn refusal(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4).map(str::to_owned),
        IpAddr::V6(v6) => v6_refusal(v6),
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "\"this network\" (0.0.0.0/8)",
        (127, _, _) => "loopback (127.0.0.0/8)",
        (10, _, _) => "private (10.0.0.0/8)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (169, 254, _) => "link-local (169.254.0.0/16, where cloud metadata services answer)",
        (100, 64..=127, _) => "carrier-grade NAT shared space (100.64.0.0/10)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation (TEST-NET)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (192, 88, 99) => "6to4 relay anycast (192.88.99.0/24)",
        (224..=239, _, _) => "multicast (224.0.0.0/4)",
        (240..=255, _, _) => "reserved or broadcast (240.0.0.0/4)",
        _ => return None,
    })
}

fn v6_refusal(ip: Ipv6Addr) -> Option<String> {
    let s = ip.segments();
    // Forms that carry an IPv4 address: judged by it, and refused outright when they are only a
    // way around the check (a translation or tunnel to a private address).
    let embedded =
        |v4: Ipv4Addr, form: &str| v4_class(v4).map(|class| format!("{form} of {v4}, which is {class}"));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return embedded(v4, "an IPv4-mapped IPv6 address");
    }
    let low_v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => "unspecified (::)".to_owned(),
        [0, 0, 0, 0, 0, 0, 0, 1] => "loopback (::1)".to_owned(),
        // ::a.b.c.d, deprecated IPv4-compatible addresses: nothing public uses them.
        [0, 0, 0, 0, 0, 0, _, _] => format!("an IPv4-compatible IPv6 address (::{low_v4}), deprecated"),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => {
            return embedded(low_v4, "a NAT64 address (64:ff9b::/96)");
        }
        [0x64, 0xff9b, 1, ..] => "local-use NAT64 (64:ff9b:1::/48)".to_owned(),
        [0x100, 0, 0, 0, ..] => "discard-only (100::/64)".to_owned(),
        [0x2001, 0, ..] => "Teredo tunnelling (2001::/32)".to_owned(),
        [0x2001, 0xdb8, ..] => "documentation (2001:db8::/32)".to_owned(),
        [0x2002, hi, lo, ..] => {
            let v4 = Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            return embedded(v4, "a 6to4 address (2002::/16)");
        }
        [first, ..] if first & 0xfe00 == 0xfc00 => "unique local, private (fc00::/7)".to_owned(),
        [first, ..] if first & 0xffc0 == 0xfe80 => "link-local (fe80::/10)".to_owned(),
        [first, ..] if first & 0xffc0 == 0xfec0 => "site-local, deprecated (fec0::/10)".to_owned(),
        [first, ..] if first & 0xff00 == 0xff00 => "multicast (ff00::/8)".to_owned(),
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<String> {
        refusal(ip.parse().unwrap())
    }

    #[test]
    fn every_non_public_class_is_refused_by_name() {
        for (ip, named) in [
            ("127.0.0.1", "loopback"),
            ("127.255.1.2", "loopback"),
            ("0.0.0.0", "this network"),
            ("10.1.2.3", "private"),
            ("172.31.255.255", "private"),
            ("192.168.0.1", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("192.0.2.1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            (
                "::ffff:127.0.0.1",
                "IPv4-mapped IPv6 address of 127.0.0.1, which is loopback",
            ),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("::127.0.0.1", "IPv4-compatible"),
            ("64:ff9b::a00:1", "NAT64 address (64:ff9b::/96) of 10.0.0.1"),
            ("2002:7f00:1::", "6to4 address (2002::/16) of 127.0.0.1"),
            ("2001::1", "Teredo"),
            ("2001:db8::1", "documentation"),
            ("fd00::1", "unique local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
        ] {
            let why = class(ip).unwrap_or_else(|| panic!("{ip} is let through"));
            assert!(why.contains(named), "{ip}: {why}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }
}
