//! `junit.xml`: SLOs and expectations as JUnit test cases, so CI systems (GitLab, Jenkins,
//! GitHub test reporters) show a nightly run's verdicts next to ordinary tests.
//!
//! Why a plain list of [`Check`]s: SLOs and policy expectations come from different modules;
//! each hands over `(name, passed, message)` and this renders them, one `<testsuite>` per kind.

use std::fmt::Write as _;

/// One verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Test case name, e.g. `e2e_p99 < 50ms`.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// Measured value, or why it failed.
    pub message: String,
}

impl Check {
    /// A check from its three parts.
    pub fn new(name: impl Into<String>, passed: bool, message: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            passed,
            message: message.into(),
        }
    }
}

/// Renders `suites` (`(kind, checks)`, e.g. `("slo", ...)`, `("expect", ...)`) for the run
/// named `run`.
pub fn render(run: &str, suites: &[(&str, &[Check])]) -> String {
    let total: usize = suites.iter().map(|(_, c)| c.len()).sum();
    let failed: usize = suites
        .iter()
        .map(|(_, c)| c.iter().filter(|c| !c.passed).count())
        .sum();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"thingswarm {}\" tests=\"{total}\" failures=\"{failed}\" errors=\"0\">",
        escape(run)
    );
    for (kind, checks) in suites {
        let failures = checks.iter().filter(|c| !c.passed).count();
        let class = escape(&format!("thingswarm.{run}.{kind}"));
        let _ = writeln!(
            s,
            "  <testsuite name=\"{class}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\">",
            checks.len()
        );
        for c in *checks {
            let name = escape(&c.name);
            let message = escape(&c.message);
            if c.passed {
                let _ = writeln!(
                    s,
                    "    <testcase classname=\"{class}\" name=\"{name}\">\n      <system-out>{message}</system-out>\n    </testcase>"
                );
            } else {
                let _ = writeln!(
                    s,
                    "    <testcase classname=\"{class}\" name=\"{name}\">\n      <failure message=\"{message}\" type=\"{kind}\">{message}</failure>\n    </testcase>",
                    kind = escape(kind)
                );
            }
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

/// XML-escapes text and attribute values (control characters XML 1.0 forbids are dropped).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_junit_with_the_right_counts() {
        let slos = [
            Check::new("e2e_p99 < 50ms", true, "measured 12.0ms"),
            Check::new("loss <= 0%", false, "measured 1.0000% & <more>\u{1}"),
        ];
        let expect = [Check::new("sensor-1 publish \"x\" deny", false, "allowed")];
        let xml = render("telemetry", &[("slo", &slos), ("expect", &expect)]);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "testsuites");
        assert_eq!(root.attribute("tests"), Some("3"));
        assert_eq!(root.attribute("failures"), Some("2"));
        let suites: Vec<_> = root.children().filter(|n| n.is_element()).collect();
        assert_eq!(suites.len(), 2);
        assert_eq!(
            suites[0].attribute("name"),
            Some("thingswarm.telemetry.slo")
        );
        let cases: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        assert_eq!(cases.len(), 3);
        assert_eq!(
            cases[2].attribute("name"),
            Some("sensor-1 publish \"x\" deny")
        );
        let failures: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("failure"))
            .collect();
        assert_eq!(failures.len(), 2);
        assert_eq!(
            failures[0].attribute("message"),
            Some("measured 1.0000% & <more>")
        );
    }

    #[test]
    fn no_checks_is_an_empty_valid_document() {
        let xml = render("quickstart", &[("slo", &[])]);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(doc.root_element().attribute("tests"), Some("0"));
    }
}
