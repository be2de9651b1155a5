//! Every shipped scenario loads; every invalid fixture fails with the error its first line
//! promises (`# expect: ...`), positioned as `file:line:col`.

use std::path::{Path, PathBuf};

use thingswarm::scenario::{Overrides, Plan};

/// `*.toml` files in `dir`, relative to the crate root (cargo runs tests there), as users and
/// errors see them.
fn tomls(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn shipped_scenarios_load() {
    let files = tomls("scenarios");
    assert!(files.len() >= 2, "{files:?}");
    let mut specs = 0;
    for file in files {
        // A tls-matrix spec (`kind = "tls-matrix"`) is not a run scenario: `run` says which
        // command reads it (the spec itself is parsed by `tls::matrix_spec`'s tests).
        let text = std::fs::read_to_string(&file).unwrap();
        if thingswarm::tls::matrix_spec::kind_offset(&text).is_some() {
            let e = Plan::load(&file, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("use thingswarm tls-matrix FILE"), "{e}");
            specs += 1;
            continue;
        }
        let plan = Plan::load(&file, &Overrides::default())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(plan.total_devices() > 0);
    }
    assert_eq!(specs, 1, "scenarios/tls-matrix.toml is the one spec");
}

#[test]
fn invalid_fixtures_fail_with_their_expected_error() {
    let files = tomls("tests/fixtures/scenarios/invalid");
    assert!(files.len() >= 30, "only {} fixtures", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: ...`", file.display()))
            .trim();
        let err = match Plan::load(&file, &Overrides::default()) {
            Ok(_) => panic!("{}: loaded, expected error {expect:?}", file.display()),
            Err(e) => e.to_string(),
        };
        assert!(
            !err.contains('\n'),
            "{}: not one line: {err}",
            file.display()
        );
        assert!(
            err.contains(expect),
            "{}:\n  error:    {err}\n  expected: {expect}",
            file.display()
        );
        let prefix = format!("{}:", file.display());
        let rest = err
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("error does not start with {prefix}: {err}"));
        let mut parts = rest.splitn(3, ':');
        let line: usize = parts.next().unwrap().parse().unwrap_or(0);
        let col: usize = parts.next().unwrap_or("").parse().unwrap_or(0);
        assert!(line > 0 && col > 0, "no line:col in {err}");
    }
}

#[test]
fn missing_file_names_the_path() {
    let err = Plan::load(Path::new("scenarios/no-such.toml"), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("scenarios/no-such.toml: No such file"),
        "{err}"
    );
}
