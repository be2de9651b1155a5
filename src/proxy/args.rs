//! Parsers of the `proxy` command's values, shared with scenarios: loopback addresses,
//! durations, fractions and bandwidths, each failing with the value and the expected form.

use std::net::SocketAddr;
use std::time::Duration;

/// `127.0.0.1:PORT` (any loopback address): the proxy forwards only on loopback.
pub fn loopback(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an address (expected e.g. 127.0.0.1:8884)"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{text:?} is not a loopback address (expected 127.0.0.0/8 or [::1]: the proxy injects faults on loopback only)"
        ));
    }
    Ok(addr)
}

/// humantime syntax: `"5ms"`, `"1s"`, `"1m 30s"`.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|_| {
        format!("{text:?} is not a duration (expected e.g. \"5ms\", \"1s\" or \"2m\")")
    })
}

/// A fraction in `0..=1`.
pub fn fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "{text:?} is not a fraction (expected 0 to 1, e.g. 0.1)"
        )),
    }
}

/// Bytes per second: `"1MB/s"`, `"512KB/s"`, `"100B/s"` (decimal units; `KiB`/`MiB` binary).
pub fn bandwidth(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{text:?} is not a bandwidth (expected e.g. \"1MB/s\", \"512KB/s\", \"2MiB/s\" or \"100B/s\")"
        )
    };
    let t = text.trim();
    let t = t.strip_suffix("/s").ok_or_else(bad)?;
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bps = n * scale;
    if !(1.0..=1e12).contains(&bps) {
        return Err(bad());
    }
    Ok(bps as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(bandwidth("1MB/s"), Ok(1_000_000));
        assert_eq!(bandwidth("2MiB/s"), Ok(2 * 1024 * 1024));
        assert_eq!(bandwidth("100B/s"), Ok(100));
        assert!(bandwidth("1MB").unwrap_err().contains("expected e.g."));
        assert!(bandwidth("fast/s").is_err());
        assert!(bandwidth("0B/s").is_err());
        assert_eq!(fraction("0.1"), Ok(0.1));
        assert!(fraction("1.5").unwrap_err().contains("0 to 1"));
        assert_eq!(duration("5ms"), Ok(Duration::from_millis(5)));
        assert!(loopback("10.0.0.1:1883").unwrap_err().contains("loopback"));
        assert_eq!(loopback("127.0.0.1:9").unwrap().port(), 9);
    }
}
