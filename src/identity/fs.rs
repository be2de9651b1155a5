//! Private files: keys land 0600 inside 0700 directories, written atomically.
//!
//! Every identity file goes through here so the permission rule lives in one place.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::IdentityError;

/// Creates `dir` (and parents) with mode 0700, and tightens it to 0700 if it already exists.
pub fn private_dir(dir: &Path) -> Result<(), IdentityError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o700)))
        .map_err(|e| IdentityError::io(dir, e))
}

/// Writes `bytes` to `path` with mode 0600 via a temporary file and a rename, so a crash never
/// leaves a half-written key or index behind.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let tmp = path.with_extension("tmp");
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| IdentityError::io(path, e))
}

/// Opens `path` for appending with mode 0600 (created if missing).
pub fn append_private(path: &Path) -> Result<fs::File, IdentityError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| IdentityError::io(path, e))
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    fs::read(path).map_err(|e| IdentityError::io(path, e))
}

/// Every certificate in a PEM file. With `expected` (what the file should hold, for the
/// message), a file without any certificate is an error naming it.
pub fn read_pem_certs(
    path: &Path,
    expected: Option<&str>,
) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::bad_cert(path, format!("unreadable PEM ({e})")))?;
    match expected {
        Some(what) if certs.is_empty() => Err(IdentityError::bad_cert(
            path,
            format!("no `-----BEGIN CERTIFICATE-----` block found (expected {what})"),
        )),
        _ => Ok(certs),
    }
}
