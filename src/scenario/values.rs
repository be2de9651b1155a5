//! Parsers for the values a scenario writes as strings: rates, durations, broker URLs, MQTT
//! versions. Each returns the "`value` is not X (expected Y)" part of an error; the caller
//! adds the position and key.

use std::path::Path;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::Protocol;

const RATE_FORM: &str = r#"expected "N/s", "N/min", "N/h" or "max""#;
const URL_FORM: &str = "expected mqtts://host:port, e.g. mqtts://127.0.0.1:8883";

/// `"200/s"`, `"30/min"`, `"0.5/h"` -> connects per second; `"max"` -> `None`.
pub(super) fn rate(text: &str) -> Result<Option<f64>, String> {
    let trimmed = text.trim();
    if trimmed == "max" {
        return Ok(None);
    }
    let bad = || format!("{text:?} is not a rate ({RATE_FORM})");
    let (count, unit) = trimmed.split_once('/').ok_or_else(bad)?;
    let (count, unit) = (count.trim(), unit.trim());
    if count.starts_with('-') {
        return Err(format!(
            "{text:?} is negative, not a positive rate ({RATE_FORM}, N > 0)"
        ));
    }
    let per = match unit {
        "s" => 1.0,
        "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    // Digits and one optional point only: f64's parser would also take "inf", "1e3", "-2".
    let plain = !count.is_empty()
        && count.chars().all(|c| c.is_ascii_digit() || c == '.')
        && count.matches('.').count() <= 1;
    let n: f64 = count.parse().ok().filter(|_| plain).ok_or_else(bad)?;
    if n <= 0.0 {
        return Err(format!(
            "{text:?} is not a positive rate ({RATE_FORM}, N > 0)"
        ));
    }
    Ok(Some(n / per))
}

/// Connects per second as the plan shows it: `"300/s"`, `"0.5/s"`, `"max"`.
pub(super) fn rate_label(per_sec: Option<f64>) -> String {
    match per_sec {
        None => "max".into(),
        Some(r) => {
            let text = format!("{r:.3}");
            format!("{}/s", text.trim_end_matches('0').trim_end_matches('.'))
        }
    }
}

/// humantime syntax: `"500ms"`, `"10s"`, `"2m"`, `"1h 30m"`.
pub(super) fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|_| {
        format!(r#"{text:?} is not a duration (expected e.g. "500ms", "10s", "2m" or "1h 30m")"#)
    })
}

/// `mqtts://host:port` (IPv6 hosts in brackets) -> host without brackets, port.
pub(super) fn broker_url(url: &str) -> Result<(String, u16), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not a broker URL ({URL_FORM})"));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "mqtts" => {}
        "mqtt" | "tcp" | "ws" => {
            return Err(format!(
                "{url:?} is plain MQTT: thingswarm speaks mTLS only ({URL_FORM})"
            ))
        }
        _ => return Err(format!("{url:?} has scheme `{scheme}` ({URL_FORM})")),
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => return Err(format!("{url:?} has an unclosed `[` ({URL_FORM})")),
        },
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    let Some(port) = port else {
        return Err(format!("{url:?} has no port ({URL_FORM})"));
    };
    let bad_host = |c: char| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#' | '[' | ']');
    if host.is_empty() || host.contains(bad_host) || (host.contains(':') && !rest.starts_with('['))
    {
        return Err(format!("{url:?} has no valid host ({URL_FORM})"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_string(), p)),
        _ => Err(format!(
            "{url:?} has port `{port}`, which is not a port number ({URL_FORM}; port 1..=65535, nothing after it)"
        )),
    }
}

/// `"3.1.1"` or `"5"`.
pub(super) fn protocol(text: &str) -> Result<Protocol, String> {
    match text.trim() {
        "3.1.1" => Ok(Protocol::V311),
        "5" => Ok(Protocol::V5),
        _ => Err(format!(
            r#"{text:?} is not an MQTT version (expected "3.1.1" or "5")"#
        )),
    }
}

/// That `path` is a readable regular file (the error is "path: why"; callers add the expected
/// form): missing certificates are found by `check`, not
/// half-way through a run.
pub(super) fn readable_file(path: &Path) -> Result<(), String> {
    match std::fs::File::open(path).and_then(|f| f.metadata()) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(format!("{}: not a file", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// That `path` is a readable PEM file holding at least one certificate: a server CA that is
/// not one fails at `check`, not at the first handshake.
pub(super) fn pem_certificates(path: &Path) -> Result<(), String> {
    readable_file(path)?;
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    match CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if !certs.is_empty() => Ok(()),
        Ok(_) => Err(format!("{}: no CERTIFICATE block", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(rate("200/s"), Ok(Some(200.0)));
        assert_eq!(rate(" 30/min "), Ok(Some(0.5)));
        assert_eq!(rate("1800/h"), Ok(Some(0.5)));
        assert_eq!(rate("2.5/s"), Ok(Some(2.5)));
        assert_eq!(rate("max"), Ok(None));
        for bad in [
            "fast", "200", "200/d", "/s", "inf/s", "1e3/s", "1.2.3/s", "", "max/s",
        ] {
            let e = rate(bad).unwrap_err();
            assert!(e.contains("is not a rate"), "{bad}: {e}");
            assert!(e.contains("\"N/s\""), "{bad}: {e}");
        }
        assert!(rate("0/s").unwrap_err().contains("positive"));
        assert!(rate("-5/s")
            .unwrap_err()
            .contains("is negative, not a positive rate"));
        assert!(rate("0.0/min").unwrap_err().contains("positive"));
    }

    #[test]
    fn rate_labels() {
        assert_eq!(rate_label(None), "max");
        assert_eq!(rate_label(Some(300.0)), "300/s");
        assert_eq!(rate_label(Some(0.5)), "0.5/s");
        assert_eq!(rate_label(Some(1.0 / 60.0)), "0.017/s");
    }

    #[test]
    fn durations() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        for bad in ["10", "ten seconds", "", "-1s"] {
            let e = duration(bad).unwrap_err();
            assert!(e.contains("is not a duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            broker_url("mqtts://127.0.0.1:8883"),
            Ok(("127.0.0.1".into(), 8883))
        );
        assert_eq!(
            broker_url("MQTTS://broker.example:443"),
            Ok(("broker.example".into(), 443))
        );
        assert_eq!(broker_url("mqtts://[::1]:8883"), Ok(("::1".into(), 8883)));
        for (bad, needle) in [
            ("mqtt://127.0.0.1:1883", "mTLS only"),
            ("127.0.0.1:8883", "not a broker URL"),
            ("https://h:1", "scheme `https`"),
            ("mqtts://h", "no port"),
            ("mqtts://[::1]", "no port"),
            ("mqtts://:8883", "no valid host"),
            ("mqtts://u@h:8883", "no valid host"),
            ("mqtts://::1:8883", "no valid host"),
            ("mqtts://h:0", "not a port number"),
            ("mqtts://h:8883/x", "not a port number"),
            ("mqtts://h:99999", "not a port number"),
        ] {
            let e = broker_url(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(e.contains("mqtts://host:port"), "{bad}: {e}");
        }
    }

    #[test]
    fn protocols() {
        assert_eq!(protocol("3.1.1"), Ok(Protocol::V311));
        assert_eq!(protocol("5"), Ok(Protocol::V5));
        assert!(protocol("4")
            .unwrap_err()
            .contains(r#"expected "3.1.1" or "5""#));
    }
}
