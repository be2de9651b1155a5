//! `[target].tls = { versions = [...], suites = [...], alpn = [...], backend = "..." }`,
//! `[target].sni`, and the matching flags (`--tls-version`, `--cipher-suite`, `--alpn`, `--sni`,
//! `--tls-backend`; a flag replaces the file's value).

use toml::Spanned;

use super::error::Source;
use super::raw::RawTls;
use super::{Overrides, ScenarioError};
use crate::tls::options::{Backend, Suite, TlsOptions, TlsVersion};

/// The TLS choices of the scenario and the command line, validated.
pub(super) fn options(
    src: &Source<'_>,
    raw: Option<&Spanned<RawTls>>,
    sni: Option<&Spanned<String>>,
    overrides: &Overrides,
) -> Result<TlsOptions, ScenarioError> {
    let file = raw.map(Spanned::get_ref);
    let mut out = TlsOptions::default();

    // Each list: from the flag when given (errors name the flag), else from the file (errors
    // point at the value).
    match (
        &overrides.tls_versions,
        file.and_then(|t| t.versions.as_ref()),
    ) {
        (Some(flags), _) => {
            for v in flags {
                out.versions.push(
                    TlsVersion::parse(v).map_err(|m| src.flag(format!("--tls-version: {m}")))?,
                );
            }
        }
        (None, Some(values)) => {
            for v in values {
                out.versions
                    .push(TlsVersion::parse(v.get_ref()).map_err(|m| {
                        src.at(v.span().start, format!("target.tls.versions: {m}"))
                    })?);
            }
        }
        (None, None) => {}
    }
    match (
        &overrides.cipher_suites,
        file.and_then(|t| t.suites.as_ref()),
    ) {
        (Some(flags), _) => {
            for s in flags {
                Suite::parse(s).map_err(|m| src.flag(format!("--cipher-suite: {m}")))?;
                out.suites.push(s.clone());
            }
        }
        (None, Some(values)) => {
            for s in values {
                Suite::parse(s.get_ref())
                    .map_err(|m| src.at(s.span().start, format!("target.tls.suites: {m}")))?;
                out.suites.push(s.get_ref().clone());
            }
        }
        (None, None) => {}
    }
    out.alpn = match (&overrides.alpn, file.and_then(|t| t.alpn.as_ref())) {
        (Some(flags), _) => flags.clone(),
        (None, Some(values)) => values.iter().map(|v| v.get_ref().clone()).collect(),
        (None, None) => Vec::new(),
    };
    if let Some(b) = &overrides.tls_backend {
        out.backend = Backend::parse(b).map_err(|m| src.flag(format!("--tls-backend: {m}")))?;
    } else if let Some(b) = file.and_then(|t| t.backend.as_ref()) {
        out.backend = Backend::parse(b.get_ref())
            .map_err(|m| src.at(b.span().start, format!("target.tls.backend: {m}")))?;
    }
    if let Some(name) = &overrides.sni {
        out.sni = Some(name.trim().to_string());
        if let Err(m) = (TlsOptions {
            sni: out.sni.clone(),
            ..TlsOptions::default()
        })
        .validate()
        {
            return Err(src.flag(format!("--{m}")));
        }
    } else if let Some(name) = sni {
        out.sni = Some(name.get_ref().trim().to_string());
        if let Err(m) = (TlsOptions {
            sni: out.sni.clone(),
            ..TlsOptions::default()
        })
        .validate()
        {
            return Err(src.at(name.span().start, format!("target.{m}")));
        }
    }
    out.validate().map_err(|m| match raw {
        Some(t)
            if overrides.tls_versions.is_none()
                && overrides.cipher_suites.is_none()
                && overrides.tls_backend.is_none() =>
        {
            src.at(t.span().start, format!("target.tls: {m}"))
        }
        _ => src.flag(m),
    })?;
    Ok(out)
}
