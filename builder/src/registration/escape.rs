//! Escapers for the registration formats: YAML and deb822 values, Markdown text and code spans.

/// A YAML double-quoted scalar holding exactly `s`. Everything outside YAML's printable set is
/// escaped, and so are the characters YAML 1.1 parsers treat as line breaks (NEL, LS, PS) and
/// the byte-order mark, so no parser folds or drops them.
pub fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            '\u{feff}' | '\u{fffe}' | '\u{ffff}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Markdown (CommonMark, GFM tables) text that renders as exactly `s`, wherever it stands on a
/// line: the characters that open inline constructs (emphasis, links, images, code, HTML, entities,
/// strikethrough, table cells) are backslash-escaped everywhere, and those that open a block
/// (heading, list, quote, thematic break) when they come first; line breaks become spaces.
pub fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    for (i, c) in s.chars().enumerate() {
        let block_start = (i == 0 && matches!(c, '-' | '+' | '=' | '#' | '>')) || (digits > 0 && i == digits && matches!(c, '.' | ')'));
        if block_start || matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '&' | '|' | '~' | '!' | '#') {
            out.push('\\');
            out.push(c);
        } else if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// A Markdown code span showing `s` verbatim: fenced by one more backtick than the longest run
/// inside, padded with spaces where `s` starts or ends with a backtick.
pub fn md_code(s: &str) -> String {
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut longest = 0;
    let mut run = 0;
    for c in flat.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    let pad = if flat.starts_with('`') || flat.ends_with('`') || flat.is_empty() { " " } else { "" };
    format!("{fence}{pad}{flat}{pad}{fence}")
}

/// A single-line deb822 (RFC 822-style) field value: every line break and control character
/// becomes a space, so a value can never start a new field, a continuation or a stanza.
pub fn deb822_value(s: &str) -> String {
    s.chars().map(|c| if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_quotes_everything_that_could_break_out() {
        assert_eq!(yaml_quote("plain"), "\"plain\"");
        assert_eq!(yaml_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(yaml_quote("x\ny: 1"), r#""x\ny: 1""#);
        assert_eq!(yaml_quote("\u{2028}\u{85}\u{feff}\u{7}"), r#""\L\N\ufeff\x07""#);
        // YAML indicators are harmless inside double quotes.
        assert_eq!(yaml_quote("- &a *b !c {d} [e] #f"), "\"- &a *b !c {d} [e] #f\"");
        assert_eq!(yaml_quote("Zürich"), "\"Zürich\"");
    }

    #[test]
    fn markdown_text_escapes_every_punctuation_character() {
        assert_eq!(md_text("Sponsor & Co <Labs>"), r"Sponsor \& Co \<Labs\>");
        assert_eq!(
            md_text("[x](javascript:y) *z* `q` a|b ~~s~~ &amp; ![i]"),
            r"\[x\](javascript:y) \*z\* \`q\` a\|b \~\~s\~\~ \&amp; \!\[i\]"
        );
        assert_eq!(md_text("a\nb"), "a b");
        // Block markers only where they would open a block.
        assert_eq!(md_text("- x-y"), r"\- x-y");
        assert_eq!(md_text("1. x 2."), r"1\. x 2.");
        assert_eq!(md_text("# x"), r"\# x");
        assert_eq!(md_text("example-mm, Fremont. O'Brien"), "example-mm, Fremont. O'Brien");
    }

    #[test]
    fn markdown_code_spans_outgrow_backtick_runs() {
        assert_eq!(md_code("https://a.example/"), "`https://a.example/`");
        assert_eq!(md_code("a``b"), "```a``b```");
        assert_eq!(md_code("`x"), "`` `x ``");
    }

    #[test]
    fn deb822_values_never_start_a_field() {
        assert_eq!(deb822_value("Sponsor & Co"), "Sponsor & Co");
        assert_eq!(deb822_value("a\nSite: evil\n\nb\u{2028}c"), "a Site: evil  b c");
    }
}
