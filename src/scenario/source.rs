//! `[target] source_addresses = ["127.0.0.2", "127.0.0.3-127.0.0.9"]` and `--source-address`
//! (repeatable; replaces the file's list): the local addresses outgoing connections bind to,
//! assigned round-robin by device index.
//!
//! Why: the kernel gives one source address ~28,000 ephemeral ports per destination
//! (`ip_local_port_range`), so one machine opening more sessions to one broker address needs
//! more source addresses. Loopback has 127.0.0.0/8 to spread over. Default: none (the kernel
//! picks the address). A loopback target only accepts loopback sources (and the reverse): a
//! mismatch could only fail at connect time, once per device.

use std::net::IpAddr;

use toml::Spanned;

use super::error::Source;
use super::{Overrides, ScenarioError, Target};

/// Most source addresses a run takes (more would not help: each already has ~28k ports).
pub const MAX_SOURCE_ADDRESSES: usize = 4096;

const FORM: &str = "expected an IP address such as \"127.0.0.2\" or an inclusive IPv4 range such as \"127.0.0.2-127.0.0.9\"";

/// The validated list, from the flags when given (errors name the flag), else from the file
/// (errors point at the value).
pub(super) fn source_addresses(
    src: &Source<'_>,
    file: Option<&Vec<Spanned<String>>>,
    overrides: &Overrides,
    target: &Target,
) -> Result<Vec<IpAddr>, ScenarioError> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut add = |value: &str, fail: &dyn Fn(String) -> ScenarioError| {
        for ip in parse_entry(value).map_err(fail)? {
            check_against_target(ip, target).map_err(fail)?;
            if out.contains(&ip) {
                return Err(fail(format!("{ip} is listed twice")));
            }
            if out.len() == MAX_SOURCE_ADDRESSES {
                return Err(fail(format!(
                    "more than {MAX_SOURCE_ADDRESSES} source addresses"
                )));
            }
            out.push(ip);
        }
        Ok(())
    };
    match (&overrides.source_addresses, file) {
        (Some(flags), _) => {
            for v in flags {
                add(v, &|m| src.flag(format!("--source-address {v:?}: {m}")))?;
            }
        }
        (None, Some(values)) => {
            for v in values {
                let at = v.span().start;
                add(v.get_ref(), &|m| {
                    src.at(
                        at,
                        format!("target.source_addresses: {:?}: {m}", v.get_ref()),
                    )
                })?;
            }
        }
        (None, None) => {}
    }
    Ok(out)
}

/// One entry: an address, or an inclusive IPv4 range `first-last`.
pub fn parse_entry(value: &str) -> Result<Vec<IpAddr>, String> {
    let value = value.trim();
    if let Some((first, last)) = value.split_once('-') {
        let (Ok(first), Ok(last)) = (
            first.trim().parse::<std::net::Ipv4Addr>(),
            last.trim().parse::<std::net::Ipv4Addr>(),
        ) else {
            return Err(format!("not an address range ({FORM})"));
        };
        let (a, b) = (u32::from(first), u32::from(last));
        if a > b {
            return Err(format!("the range runs backwards ({FORM})"));
        }
        if (b - a) as usize >= MAX_SOURCE_ADDRESSES {
            return Err(format!(
                "the range holds {} addresses (expected at most {MAX_SOURCE_ADDRESSES})",
                u64::from(b - a) + 1
            ));
        }
        return Ok((a..=b)
            .map(|n| IpAddr::V4(std::net::Ipv4Addr::from(n)))
            .collect());
    }
    let ip: IpAddr = value
        .parse()
        .map_err(|_| format!("not an IP address ({FORM})"))?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(format!("{ip} cannot be a source address ({FORM})"));
    }
    Ok(vec![ip])
}

/// A source address must be able to reach the target: loopback to loopback, the same family
/// as an IP target. Targets named by host (other than `localhost`) are checked at connect time.
fn check_against_target(ip: IpAddr, target: &Target) -> Result<(), String> {
    let to: Option<IpAddr> = match target {
        // The embedded broker listens on 127.0.0.1.
        Target::Embedded => Some(std::net::Ipv4Addr::LOCALHOST.into()),
        Target::Broker { host, .. } if host == "localhost" => {
            if !ip.is_loopback() {
                return Err(format!(
                    "the target is loopback (localhost): only loopback source addresses reach it (expected 127.x.y.z or ::1, got {ip})"
                ));
            }
            return Ok(());
        }
        Target::Broker { host, .. } => host.parse().ok(),
    };
    let Some(to) = to else { return Ok(()) };
    if to.is_ipv4() != ip.is_ipv4() {
        return Err(format!(
            "{ip} and the target {to} are of different address families"
        ));
    }
    match (to.is_loopback(), ip.is_loopback()) {
        (true, false) => Err(format!(
            "the target {to} is loopback: only loopback source addresses reach it (expected 127.x.y.z or ::1)"
        )),
        (false, true) => Err(format!(
            "a loopback source address cannot reach the target {to}"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_addresses_or_inclusive_ranges() {
        assert_eq!(
            parse_entry("127.0.0.2").unwrap(),
            vec!["127.0.0.2".parse::<IpAddr>().unwrap()]
        );
        let range = parse_entry("127.0.0.254-127.0.1.1").unwrap();
        let shown: Vec<String> = range.iter().map(|ip| ip.to_string()).collect();
        assert_eq!(
            shown,
            ["127.0.0.254", "127.0.0.255", "127.0.1.0", "127.0.1.1"]
        );
        assert_eq!(parse_entry("::1").unwrap().len(), 1);
        for bad in [
            "127.0.0",
            "127.0.0.9-127.0.0.2",
            "a-b",
            "0.0.0.0",
            "127.0.0.0-127.1.0.0",
        ] {
            let e = parse_entry(bad).unwrap_err();
            assert!(e.contains("expected"), "{bad}: {e}");
        }
    }

    #[test]
    fn sources_must_reach_the_target() {
        let embedded = Target::Embedded;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(check_against_target(ip("127.0.0.3"), &embedded).is_ok());
        let e = check_against_target(ip("10.0.0.1"), &embedded).unwrap_err();
        assert!(e.contains("only loopback"), "{e}");
        assert!(check_against_target(ip("::1"), &embedded)
            .unwrap_err()
            .contains("families"));
        let remote = Target::Broker {
            host: "10.1.2.3".into(),
            port: 8883,
            server_ca: None,
            insecure: true,
        };
        assert!(check_against_target(ip("10.0.0.1"), &remote).is_ok());
        assert!(check_against_target(ip("127.0.0.2"), &remote).is_err());
        let localhost = Target::Broker {
            host: "localhost".into(),
            port: 8883,
            server_ca: None,
            insecure: true,
        };
        assert!(check_against_target(ip("10.0.0.1"), &localhost).is_err());
        let named = Target::Broker {
            host: "broker.example".into(),
            port: 8883,
            server_ca: None,
            insecure: true,
        };
        assert!(check_against_target(ip("10.0.0.1"), &named).is_ok());
    }
}
