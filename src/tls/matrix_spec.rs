//! The tls-matrix spec file (`scenarios/tls-matrix.toml`, `kind = "tls-matrix"`): which
//! versions, suites and device key types `thingswarm tls-matrix FILE` crosses, how many devices
//! and probe handshakes per cell, and optionally the broker to run against. Kept apart from run
//! scenarios (the `kind` key tells them apart) so a broker team can keep its matrix in a file
//! beside its scenarios; command-line flags replace the file's values.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The value of `kind` that marks a tls-matrix spec.
pub const KIND: &str = "tls-matrix";

/// The spec as written (strict: a typo is an error).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    kind: toml::Spanned<String>,
    versions: Option<Vec<String>>,
    suites: Option<Vec<String>>,
    algorithms: Option<Vec<String>>,
    devices: Option<toml::Spanned<u64>>,
    handshakes: Option<toml::Spanned<u32>>,
    target: Option<RawSpecTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpecTarget {
    url: Option<String>,
    server_ca: Option<PathBuf>,
    sni: Option<String>,
}

/// Only the `kind` key, read leniently, to recognise a spec whatever else it holds.
#[derive(Debug, Deserialize)]
struct KindProbe {
    kind: Option<toml::Spanned<String>>,
}

/// A loaded spec: every field optional (the command's defaults and flags fill the rest).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spec {
    /// `versions = ["1.2", "1.3"]` (names checked when the cells are made).
    pub versions: Vec<String>,
    /// `suites = [...]` by OpenSSL name (TLS 1.3 ones by IANA name).
    pub suites: Vec<String>,
    /// `algorithms = [...]`: device key types.
    pub algorithms: Vec<String>,
    /// `devices`: devices connecting per cell.
    pub devices: Option<u64>,
    /// `handshakes`: probe handshakes per cell.
    pub handshakes: Option<u32>,
    /// `[target].url`: the broker every cell runs against instead of a local mosquitto.
    pub target: Option<String>,
    /// `[target].server_ca`, resolved against the spec's directory.
    pub server_ca: Option<PathBuf>,
    /// `[target].sni`.
    pub sni: Option<String>,
}

/// Where in `text` a spec's `kind = "tls-matrix"` value starts, if `text` is a spec. Run
/// scenarios use it to refuse a spec with a pointer to the right command.
pub fn kind_offset(text: &str) -> Option<usize> {
    let probe: KindProbe = toml::from_str(text).ok()?;
    let kind = probe.kind?;
    (kind.get_ref() == KIND).then(|| kind.span().start)
}

/// Reads the spec at `path`; errors are one line, `path:line:col: message`.
pub fn load(path: &Path) -> Result<Spec, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text, path)
}

/// Parses spec `text` as if read from `path` (which names it in errors and anchors
/// `server_ca`).
pub fn parse(text: &str, path: &Path) -> Result<Spec, String> {
    let at = |offset: usize, m: &str| {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{}:{line}:{col}: {m}", path.display())
    };
    let raw: RawSpec = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        at(offset, e.message().trim())
    })?;
    if raw.kind.get_ref() != KIND {
        return Err(at(
            raw.kind.span().start,
            &format!(
                "kind: {:?} is not a tls-matrix spec (expected kind = \"{KIND}\")",
                raw.kind.get_ref()
            ),
        ));
    }
    if let Some(d) = &raw.devices {
        if !(1..=1000).contains(d.get_ref()) {
            return Err(at(
                d.span().start,
                &format!("devices: {} (expected 1 to 1000)", d.get_ref()),
            ));
        }
    }
    if let Some(h) = &raw.handshakes {
        if !(1..=1000).contains(h.get_ref()) {
            return Err(at(
                h.span().start,
                &format!("handshakes: {} (expected 1 to 1000)", h.get_ref()),
            ));
        }
    }
    let dir = path.parent().unwrap_or(Path::new(""));
    let target = raw.target.unwrap_or(RawSpecTarget {
        url: None,
        server_ca: None,
        sni: None,
    });
    Ok(Spec {
        versions: raw.versions.unwrap_or_default(),
        suites: raw.suites.unwrap_or_default(),
        algorithms: raw.algorithms.unwrap_or_default(),
        devices: raw.devices.map(|d| *d.get_ref()),
        handshakes: raw.handshakes.map(|h| *h.get_ref()),
        target: target.url,
        server_ca: target.server_ca.map(|p| match p.is_absolute() {
            true => p,
            false => dir.join(p),
        }),
        sni: target.sni,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_spec_parses_and_is_recognised() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/tls-matrix.toml"
        ));
        let text = std::fs::read_to_string(path).unwrap();
        assert!(kind_offset(&text).is_some());
        let spec = parse(&text, path).unwrap();
        assert_eq!(spec.suites.len(), 20, "{spec:?}");
        assert!(spec.devices.is_some() && spec.handshakes.is_some());
    }

    #[test]
    fn bad_specs_are_one_line_with_a_position() {
        let p = Path::new("m.toml");
        assert_eq!(kind_offset("name = \"x\"\nduration = \"1s\"\n"), None);
        let e = parse("kind = \"tls-matrix\"\ndevics = 3\n", p).unwrap_err();
        assert!(e.starts_with("m.toml:2:1: ") && e.contains("devics"), "{e}");
        let e = parse("kind = \"tls-matrix\"\ndevices = 0\n", p).unwrap_err();
        assert_eq!(e, "m.toml:2:11: devices: 0 (expected 1 to 1000)");
        let e = parse("kind = \"run\"\n", p).unwrap_err();
        assert!(e.contains("expected kind = \"tls-matrix\""), "{e}");
        let spec = parse(
            "kind = \"tls-matrix\"\n[target]\nurl = \"mqtts://h:8883\"\nserver_ca = \"ca.pem\"\n",
            Path::new("d/m.toml"),
        )
        .unwrap();
        assert_eq!(spec.server_ca, Some(PathBuf::from("d/ca.pem")));
        assert_eq!(spec.target.as_deref(), Some("mqtts://h:8883"));
    }
}
