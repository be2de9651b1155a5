//! Reading a saved `report.json` back, for `thingswarm report` and `thingswarm compare`.

use std::path::{Path, PathBuf};

use super::{Report, SCHEMA_VERSION};

/// A saved report could not be used (bad input: exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: {source} (expected a report.json, or a results directory holding one)")]
    Read {
        /// The file tried.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a thingswarm report.
    #[error("{path}: not a thingswarm report: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where the JSON did not fit.
        source: serde_json::Error,
    },
    /// Written by a version whose figures mean something else.
    #[error("{path}: schema_version {found} (expected {SCHEMA_VERSION}; re-run with this thingswarm version)")]
    Version {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: u64,
    },
}

impl Report {
    /// Reads `path`: a `report.json`, or a directory holding one.
    pub fn load(path: &Path) -> Result<Report, LoadError> {
        let file = if path.is_dir() {
            path.join("report.json")
        } else {
            path.to_path_buf()
        };
        let bytes = std::fs::read(&file).map_err(|source| LoadError::Read {
            path: file.clone(),
            source,
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| LoadError::Parse {
                path: file.clone(),
                source,
            })?;
        let found = value["schema_version"].as_u64().unwrap_or(0);
        if found != u64::from(SCHEMA_VERSION) {
            return Err(LoadError::Version { path: file, found });
        }
        serde_json::from_value(value).map_err(|source| LoadError::Parse { path: file, source })
    }
}
