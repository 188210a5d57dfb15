//! Every escaper for fleet input, checked by re-parsing its output with the target language's
//! rules: the rendered value is one token of that language holding exactly the input (or the
//! input with the characters the escaper documents as replaced), never more.
use mm_firstboot::services::{nginx_prefix_regex, nginx_str, rsyncd_value, systemd_arg, xml_escape};
use mmbuild::monitor::prometheus::{promql_str, regex_quote, yaml_str};
use mmbuild::registration::escape::{deb822_value, yaml_quote};
use mmbuild::ship::kickstart::{ks_quote, ks_word, sh_quote};

fn breaks_line(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// What the kickstart escapers promise: line breaks become spaces.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if breaks_line(c) { ' ' } else { c }).collect()
}

/// POSIX shell words (shlex) of `q`: exactly one, equal to `want`.
fn one_shell_word(q: &str, want: &str) {
    assert_eq!(shlex::split(q), Some(vec![want.to_string()]), "shell words of {q:?}");
    assert!(!q.contains('\n'), "a kickstart line break in {q:?}");
}

/// A YAML document `k: <q>` (libyaml's rules, as go-yaml's) maps k to exactly `want`.
fn yaml_value(q: &str, want: &str) {
    let doc: serde_yaml::Value = serde_yaml::from_str(&format!("k: {q}\n")).unwrap_or_else(|e| panic!("YAML {q:?}: {e}"));
    assert_eq!(doc.get("k").and_then(|v| v.as_str()), Some(want), "YAML {q:?}");
}

/// A PromQL (Go) double-quoted literal: the escapes the escaper uses decode back to `want` and
/// the literal ends exactly at the end of `q`.
fn promql_value(q: &str, want: &str) {
    let inner = q.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or_else(|| panic!("not quoted: {q:?}"));
    let mut out = String::new();
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        match c {
            '"' => panic!("unescaped quote inside {q:?}"),
            '\n' => panic!("line break inside {q:?}"),
            '\\' => match it.next() {
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('u') => {
                    let hex: String = it.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                }
                other => panic!("unknown escape {other:?} in {q:?}"),
            },
            c => out.push(c),
        }
    }
    assert_eq!(out, want, "PromQL {q:?}");
}

/// An RE2 (regex-syntax) pattern that is one literal: exactly `want`.
fn regex_literal(pattern: &str, want: &str) {
    use regex_syntax::hir::HirKind;
    let hir = regex_syntax::Parser::new().parse(pattern).unwrap_or_else(|e| panic!("regex {pattern:?}: {e}"));
    match hir.kind() {
        HirKind::Empty => assert!(want.is_empty(), "{pattern:?}"),
        HirKind::Literal(l) => assert_eq!(&*l.0, want.as_bytes(), "{pattern:?}"),
        k => panic!("regex {pattern:?} is not a literal: {k:?}"),
    }
}

/// nginx's tokenizer (ngx_conf_read_token) on a double-quoted argument: it ends at the first
/// unescaped `"`, which must be the last character; returns the stored value.
fn nginx_value(q: &str) -> String {
    let inner = q.strip_prefix('"').unwrap_or_else(|| panic!("not quoted: {q:?}"));
    let mut out = String::new();
    let mut it = inner.chars();
    loop {
        match it.next() {
            None => panic!("unterminated {q:?}"),
            Some('"') => {
                assert_eq!(it.next(), None, "the string ends before the end of {q:?}");
                return out;
            }
            Some('\\') => match it.next() {
                Some(c @ ('"' | '\'' | '\\')) => out.push(c),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('n') => out.push('\n'),
                Some(c) => {
                    out.push('\\');
                    out.push(c);
                }
                None => panic!("unterminated {q:?}"),
            },
            Some(c) => {
                assert!(!c.is_control(), "control character in {q:?}");
                out.push(c);
            }
        }
    }
}

/// systemd's ExecStart word rules (quotes, C escapes, `%` specifiers, `$` expansion): one
/// double-quoted word decoding to `want`.
fn systemd_word(q: &str, want: &str) {
    let inner = q.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or_else(|| panic!("not quoted: {q:?}"));
    let mut out = String::new();
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        match c {
            '"' => panic!("unescaped quote inside {q:?}"),
            '\\' => match it.next() {
                Some(c @ ('"' | '\\')) => out.push(c),
                other => panic!("escape {other:?} in {q:?}"),
            },
            '%' => assert_eq!(it.next(), Some('%'), "a specifier in {q:?}"),
            '$' => assert_eq!(it.next(), Some('$'), "a variable in {q:?}"),
            c if c.is_control() => panic!("control character in {q:?}"),
            c => out.push(c),
        }
        if c == '%' || c == '$' {
            out.push(c);
        }
    }
    assert_eq!(out, want, "systemd {q:?}");
}

/// XML 1.0 `Char`: anything else makes the document not well-formed.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

fn xml_value(e: &str, want: &str) {
    use quick_xml::events::Event;
    assert!(e.chars().all(xml_char), "not an XML Char in {e:?}");
    let doc = format!(r#"<a b="{e}" c='{e}'>{e}</a>"#);
    let mut r = quick_xml::Reader::from_str(&doc);
    let mut text = String::new();
    loop {
        match r.read_event().unwrap_or_else(|err| panic!("XML {doc:?}: {err}")) {
            Event::Start(s) => {
                let attrs: Vec<_> = s.attributes().map(|a| a.unwrap().unescape_value().unwrap().into_owned()).collect();
                assert_eq!(attrs, [want, want], "XML attributes of {doc:?}");
            }
            Event::Text(t) => text.push_str(&t.unescape().unwrap()),
            Event::End(_) => break,
            other => panic!("unexpected {other:?} in {doc:?}"),
        }
    }
    assert_eq!(text, want, "XML text of {doc:?}");
}

/// The property, on one input: a panic is a finding.
pub fn run(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let flat = one_line(s);
    one_shell_word(&sh_quote(s), &flat);
    one_shell_word(&ks_quote(s), &flat);
    one_shell_word(&ks_word(s), &flat);

    yaml_value(&yaml_quote(s), s);
    yaml_value(&yaml_str(s), s);
    promql_value(&promql_str(s), s);
    regex_literal(&regex_quote(s), s);

    let visible: String = s.chars().filter(|c| !c.is_control()).collect();
    let stored = nginx_value(&nginx_str(s));
    assert_eq!(stored, visible.replace('$', "\\$"), "nginx {s:?}");
    let re = nginx_value(&nginx_prefix_regex(s));
    regex_literal(re.strip_prefix("~^").expect("anchored"), &visible);
    systemd_word(&systemd_arg(s), &visible);

    // Controls and the two noncharacters XML refuses become spaces.
    let spaced: String = s.chars().map(|c| if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' { ' ' } else { c }).collect();
    xml_value(&xml_escape(s), &spaced);

    assert!(!deb822_value(s).chars().any(breaks_line), "deb822 {s:?}");
    let r = rsyncd_value(s);
    assert!(!r.chars().any(breaks_line) && !r.contains('%'), "rsyncd {s:?}");
}
