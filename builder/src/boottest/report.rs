//! boot-test's outputs: the table for the operator and JUnit XML for CI systems.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use handlebars::Handlebars;
use serde_json::json;

use super::NodeResult;

/// One line per node, then every failure and stand-in note under it.
pub fn table(results: &[NodeResult]) -> String {
    let w = results.iter().map(|r| r.node.len()).max().unwrap_or(4).max(4);
    let sw = results.iter().map(|r| r.shape.len()).max().unwrap_or(5).max(5);
    let mut s = format!("{:<w$}  {:<sw$}  {:>9}  {:<6}  VERDICT\n", "NODE", "SHAPE", "HTTP 200", "RESULT");
    for r in results {
        let http = r.seconds_to_http_200.map_or("-".to_string(), |t| format!("{t:.0} s"));
        let result = if r.passed() { "passed" } else { "FAILED" };
        let _ = writeln!(s, "{:<w$}  {:<sw$}  {http:>9}  {result:<6}  {}", r.node, r.shape, first_line(&r.verdict));
    }
    for r in results {
        for note in &r.notes {
            let _ = writeln!(s, "{}: note: {note}", r.node);
        }
        for c in r.checks.iter().filter(|c| !c.ok) {
            let _ = writeln!(s, "{}: FAILED {}: {}", r.node, c.name, first_line(&c.detail));
            // The rest (a console tail, say) is what a CI log must carry: the kept files vanish
            // with the CI machine.
            for line in c.detail.lines().skip(1) {
                let _ = writeln!(s, "{}:   {line}", r.node);
            }
        }
        if let (false, Some(dir)) = (r.passed(), &r.kept) {
            let _ = writeln!(s, "{}: console log and state kept in {}", r.node, dir.display());
        }
    }
    let passed = results.iter().filter(|r| r.passed()).count();
    let _ = writeln!(s, "{passed} of {} node(s) passed", results.len());
    s
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// JUnit XML (the schema Jenkins, GitLab and GitHub reporters read) from `template`.
pub fn junit(template: &Path, fleet: &str, results: &[NodeResult]) -> Result<String> {
    let text = std::fs::read_to_string(template).with_context(|| format!("reading {}", template.display()))?;
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    // Handlebars' HTML escaping also covers XML attributes and text (quotes included).
    h.register_template_string("junit", text).with_context(|| format!("parsing {}", template.display()))?;
    let nodes: Vec<_> = results
        .iter()
        .map(|r| {
            let checks: Vec<_> = r
                .checks
                .iter()
                .map(|c| json!({"name": c.name, "ok": c.ok, "time": format!("{:.1}", c.seconds), "message": xml_text(first_line(&c.detail)), "detail": xml_text(&c.detail)}))
                .collect();
            json!({
                "node": r.node, "shape": r.shape, "accel": r.accel, "verdict": xml_text(&r.verdict), "notes": r.notes,
                "tests": r.checks.len(), "failures": r.checks.iter().filter(|c| !c.ok).count(),
                "time": format!("{:.1}", r.seconds), "checks": checks,
            })
        })
        .collect();
    let tests: usize = results.iter().map(|r| r.checks.len()).sum();
    let failures: usize = results.iter().map(|r| r.checks.iter().filter(|c| !c.ok).count()).sum();
    let time: f64 = results.iter().map(|r| r.seconds).sum();
    let data = json!({"fleet": fleet, "nodes": nodes, "tests": tests, "failures": failures, "time": format!("{time:.1}")});
    h.render("junit", &data).context("rendering the JUnit report")
}

/// Console text can hold control characters that XML 1.0 forbids even as references.
fn xml_text(s: &str) -> String {
    s.chars().map(|c| if c.is_control() && !matches!(c, '\n' | '\t') { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::super::Check;
    use super::*;

    fn result(node: &str, ok: bool) -> NodeResult {
        NodeResult {
            node: node.into(),
            shape: "sata 110 GB boot, 1x e1000e (stand-in)".into(),
            notes: vec!["QEMU has no r8169 NIC: e1000e stands in".into()],
            accel: "tcg".into(),
            seconds_to_http_200: Some(81.4),
            verdict: if ok { "ready - ALL GOOD".into() } else { "NEEDS ATTENTION: upstream <x> & \"y\"".into() },
            checks: vec![
                Check {
                    name: "console verdict ALL GOOD".into(),
                    ok,
                    detail: if ok { String::new() } else { "bad \u{1b}[1m <x> & \"y\"\nmore".into() },
                    seconds: 90.0,
                },
                Check { name: "http IPv4 /epel/".into(), ok: true, detail: String::new(), seconds: 1.0 },
            ],
            seconds: 120.0,
            kept: None,
        }
    }

    #[test]
    fn table_lists_every_node_and_each_failure() {
        let t = table(&[result("ziply", true), result("sonic", false)]);
        assert!(t.lines().nth(1).unwrap().starts_with("ziply "), "{t}");
        assert!(t.contains("81 s") && t.contains("passed") && t.contains("FAILED"), "{t}");
        assert!(t.contains("sonic: FAILED console verdict ALL GOOD: bad"), "{t}");
        assert!(t.contains("ziply: note: QEMU has no r8169"), "{t}");
        assert!(t.ends_with("1 of 2 node(s) passed\n"), "{t}");
    }

    #[test]
    fn junit_escapes_and_counts() {
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays/boot-test/junit.xml.hbs");
        let x = junit(&template, "example & co", &[result("ziply", true), result("sonic", false)]).unwrap();
        assert!(x.contains(r#"tests="4" failures="1""#), "{x}");
        assert!(x.contains("example &amp; co"), "{x}");
        assert!(x.contains("&lt;x&gt; &amp; &quot;y&quot;"), "{x}");
        assert!(!x.contains('\u{1b}'), "{x}");
        assert_eq!(x.matches("<failure ").count(), 1, "{x}");
    }
}
