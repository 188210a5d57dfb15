//! How wide a page lays out on a phone, read in headless Chromium: a probe page frames it at a
//! phone's width and writes the framed page's scroll width and viewport width where `--dump-dom`
//! shows them. Chromium's headless window has a minimum width above a phone's, so the frame sets
//! the width instead. The probe must be served from the page's origin (or opened from `file://`
//! with `--allow-file-access-from-files`) to read the framed document.

/// The probe page framing `src` (a URL relative to the probe) `width` pixels wide.
pub fn probe_page(src: &str, width: u32) -> String {
    assert!(!src.contains(['"', '<', '>', '&']), "a probe frames a plain relative URL, not {src:?}");
    include_str!("fit-probe.html").replace("{src}", src).replace("{width}", &width.to_string())
}

/// (scroll width, viewport width) from the probe's dumped DOM; None when the frame never loaded.
pub fn widths(dom: &str) -> Option<(u32, u32)> {
    let text = dom.rsplit("<pre id=\"w\">").next()?.split("</pre>").next()?;
    let mut numbers = text.split_whitespace().map(str::parse::<u32>);
    match (numbers.next(), numbers.next(), numbers.next()) {
        (Some(Ok(scroll)), Some(Ok(viewport)), None) => Some((scroll, viewport)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn widths_come_from_the_probe_output_only() {
        let page = super::probe_page("iso/", 390);
        assert!(page.contains(r#"src="iso/" style="width:390px"#), "{page}");
        assert_eq!(super::widths(r#"<html><pre id="w">412 390</pre></html>"#), Some((412, 390)));
        assert_eq!(super::widths(r#"<html><pre id="w"></pre></html>"#), None);
        assert_eq!(super::widths("<html></html>"), None);
    }
}
