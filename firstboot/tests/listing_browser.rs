//! The directory listing as a visitor sees it: the real nginx with the rendered configuration
//! serves a fixture tree, headless Chromium loads it (DOM and screenshots under
//! `target/tmp/listing/`), libxml2's HTML parser reads it. Needs root and install-deps.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{curl, html_xpath, node, run, Netns, Tree};
use hostkit::testenv::png::Png;

const ISO: &str = "archlinux-2026.11.01-x86_64.iso";
const ISO_BYTES: u64 = 1_234_567_890;
const DIR: &str = "/archlinux/iso/2026.11.01/";
const HOSTILE_FILE: &str = "<img src=x onerror=alert(1)>.txt";
const ODD_FILE: &str = "odd #1?50%.txt";

/// Where screenshots and DOM dumps are kept for people to look at.
fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("listing");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The Arch ISO directory: a sparse 1,234,567,890-byte image, small files, subdirectories whose
/// names sort after the files, and names that must stay text or need escaping in links.
fn fixture(t: &Tree) {
    let data = t.data();
    let dir = data.join(DIR.trim_start_matches('/'));
    std::fs::create_dir_all(dir.join("arch/boot")).unwrap();
    std::fs::create_dir_all(dir.join("zz-older")).unwrap();
    run(Command::new("truncate").arg("-s").arg(ISO_BYTES.to_string()).arg(dir.join(ISO)));
    std::fs::write(dir.join(format!("{ISO}.sig")), vec![0x88u8; 566]).unwrap();
    std::fs::write(dir.join("sha256sums.txt"), format!("{} {ISO}\n", "0".repeat(64))).unwrap();
    std::fs::write(dir.join("b2sums.txt"), vec![b'x'; 3 * 1024 * 1024 + 200_000]).unwrap();
    std::fs::write(dir.join(HOSTILE_FILE), b"hostile name\n").unwrap();
    std::fs::write(dir.join(ODD_FILE), b"odd name\n").unwrap();
    for p in &node("ziply").projects {
        std::fs::create_dir_all(data.join(&p.directory)).unwrap();
    }
    let mut touch = Command::new("touch");
    touch.args(["-d", "2026-11-30 21:23:09 UTC"]);
    for e in std::fs::read_dir(&dir).unwrap() {
        touch.arg(e.unwrap().path());
    }
    run(&mut touch);
}

/// Headless Chromium inside `ns` with a fresh profile and nothing phoning home.
fn chromium(ns: &Netns, args: &[&str], url: &str) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let out = ns
        .cmd("timeout")
        .args(["120", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--ignore-certificate-errors"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium {args:?} {url}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn screenshot(ns: &Netns, name: &str, size: &str, extra: &[&str], url: &str) -> Png {
    let file = out_dir().join(name);
    let _ = std::fs::remove_file(&file);
    let mut args = vec![format!("--screenshot={}", file.display()), format!("--window-size={size}")];
    args.extend(extra.iter().map(|s| s.to_string()));
    chromium(ns, &args.iter().map(String::as_str).collect::<Vec<_>>(), url);
    Png::read(&file)
}

#[test]
fn a_visitor_sees_where_they_are_readable_sizes_and_who_hosts_the_node() {
    // The ci node's hostile sponsor, with the projects of a node that hosts Arch.
    let mut cfg = node("ci");
    cfg.projects = node("ziply").projects;
    cfg.fleet.https = true;
    let sponsor = cfg.node.sponsor.name.clone();
    assert!(sponsor.contains('<') && sponsor.contains('"'), "the ci node's sponsor is the hostile one: {sponsor}");
    let t = Tree::new(&cfg);
    fixture(&t);
    let ns = Netns::new();
    let _nginx = t.start_nginx(&ns);
    let url = format!("http://127.0.0.1{DIR}");

    // What nginx sends, parsed by libxml2's HTML parser: no errors, no warnings.
    let (meta, body) = curl(&ns, &url);
    assert!(meta.starts_with("200 text/html"), "{meta}");
    let page = out_dir().join("listing.html");
    std::fs::write(&page, &body).unwrap();
    let lint = Command::new("xmllint").args(["--html", "--noout"]).arg(&page).output().unwrap();
    assert!(
        lint.status.success() && lint.stderr.is_empty(),
        "xmllint --html {}:\n{}",
        page.display(),
        String::from_utf8_lossy(&lint.stderr)
    );
    // Self-contained: nothing to fetch, nothing to run.
    assert_eq!(html_xpath(&page, "count(//script|//link|//img|//iframe|//object|//embed|//@src|//@*[starts-with(name(), 'on')])"), "0");
    let css = html_xpath(&page, "string(//style)");
    assert!(!css.contains("url(") && !css.contains("@import") && css.contains("prefers-color-scheme: dark"), "{css}");
    assert!(html_xpath(&page, "string(//meta[@http-equiv='Content-Security-Policy']/@content)").starts_with("default-src 'none';"));
    assert_eq!(html_xpath(&page, "string(//meta[@name='viewport']/@content)"), "width=device-width, initial-scale=1");

    // Every link in the listing leads somewhere real, odd names included.
    let links: usize = html_xpath(&page, "count(//table//a)").parse().unwrap();
    let hrefs: Vec<String> = (1..=links).map(|i| html_xpath(&page, &format!("string((//table//a)[{i}]/@href)"))).collect();
    assert_eq!(hrefs.len(), 9, "parent, 2 directories, 6 files: {hrefs:?}");
    for h in &hrefs {
        let (meta, _) = curl(&ns, &format!("{url}{h}"));
        assert!(meta.starts_with("200"), "{h}: {meta}");
    }
    assert!(hrefs.iter().any(|h| h == "./odd%20%231%3F50%25.txt"), "{hrefs:?}");

    // The image itself stays bytes: its length, not a page.
    let head = run(ns.cmd("curl").args(["-sI", &format!("{url}{ISO}")]));
    assert!(head.contains(&format!("Content-Length: {ISO_BYTES}")) && !head.contains("text/html"), "{head}");

    // The same page over HTTPS.
    let (meta, tls_body) = curl(&ns, &format!("https://127.0.0.1{DIR}"));
    assert!(meta.starts_with("200 text/html"), "{meta}");
    assert!(tls_body == body, "the HTTPS listing differs from the HTTP one");

    // What Chromium builds from it.
    let dom = chromium(&ns, &["--dump-dom"], &url).stdout;
    let dom_file = out_dir().join("listing-dom.html");
    std::fs::write(&dom_file, &dom).unwrap();
    let x = |e: &str| html_xpath(&dom_file, e);
    assert_eq!(x("normalize-space(//h1)"), format!("Index of {DIR}"));
    assert_eq!(x("string(//title)"), format!("Index of {DIR} · ci.mm.example.net"));
    // Breadcrumbs: every ancestor a link, the directory itself not.
    assert_eq!(x("count(//h1/a)"), "3");
    assert_eq!(x("string(//h1/a[1]/@href)"), "../../../");
    assert_eq!(x("string(//h1/a[2]/@href)"), "../../");
    assert_eq!(x("string(//h1/a[2])"), "archlinux");
    assert_eq!(x("string(//h1/a[3]/@href)"), "../");
    assert_eq!(x("string(//h1/a[3])"), "iso");
    assert_eq!(x("string(//h1/span[@aria-current='page'])"), "2026.11.01");

    let row = |name: &str, col: &str| x(&format!("normalize-space(//tr[td[@class='name']/a='{name}']/td[@class='{col}'])"));
    assert_eq!(row(ISO, "size"), "1.1 GiB");
    assert_eq!(x(&format!("string(//tr[td/a='{ISO}']/td[@class='size']/@title)")), "1,234,567,890 bytes");
    assert_eq!(row(&format!("{ISO}.sig"), "size"), "566 B");
    assert_eq!(row("b2sums.txt", "size"), "3.2 MiB");
    assert_eq!(row(ISO, "date"), "2026-11-30 21:23");
    assert_eq!(row("arch/", "size"), "-");
    assert_eq!(row("arch/", "date"), "2026-11-30 21:23");
    // Directories first, then files, each in name order.
    let names: Vec<String> = (1..=9).map(|i| x(&format!("string(//tbody/tr[{i}]/td[@class='name'])"))).collect();
    assert_eq!(names[..3], ["../", "arch/", "zz-older/"], "{names:?}");
    assert!(names[3..].iter().all(|n| !n.ends_with('/')), "{names:?}");
    // A hostile file name is text, not markup.
    assert_eq!(row(HOSTILE_FILE, "size"), "13 B");

    // The sponsor header, exactly as before: the hostile name as text inside the one link.
    assert_eq!(x("string(//p[@class='sponsor'])"), format!("This is a Micro Mirror node hosted by {sponsor}"));
    assert_eq!(x("string(//p[@class='sponsor']/a)"), sponsor);
    assert_eq!(x("count(//p[@class='sponsor']//*)"), "1");
    assert_eq!(x("string(//p[@class='sponsor']/a/@href)"), cfg.node.sponsor.url);
    // Footer: the projects, separated and each linked to its home page; the fleet contact.
    let names: Vec<&str> = cfg.projects.iter().map(|p| p.name.as_str()).collect();
    assert!(names.len() >= 2);
    let foot = x("normalize-space(//div[@role='contentinfo']/p[1])");
    assert_eq!(foot, format!("ci.mm.example.net mirrors {}.", names.join(", ")));
    assert_eq!(x("count(//div[@role='contentinfo']/p[1]/a)"), names.len().to_string());
    assert_eq!(x("string(//div[@role='contentinfo']/p[1]/a[1]/@href)"), cfg.projects[0].homepage);
    assert_eq!(x("string(//div[@role='contentinfo']//a[starts-with(@href, 'mailto:')])"), cfg.fleet.contact);

    // The top of the tree: no parent row, the heading is "/".
    let (_, root) = curl(&ns, "http://127.0.0.1/");
    let root_file = out_dir().join("listing-root.html");
    std::fs::write(&root_file, &root).unwrap();
    assert_eq!(html_xpath(&root_file, "normalize-space(//h1)"), "Index of /");
    assert_eq!(html_xpath(&root_file, "count(//a[@href='../'])"), "0");

    // Screenshots for people; the colour scheme follows the browser's preference.
    let light = screenshot(&ns, "listing-1000x600.png", "1000,600", &[], &url);
    assert_eq!((light.width, light.height), (1000, 600));
    let dark = screenshot(&ns, "listing-1000x600-dark.png", "1000,600", &["--force-dark-mode"], &url);
    let phone = screenshot(&ns, "listing-390x844.png", "390,844", &[], &url);
    assert_eq!(phone.width, 390);
    // Fits a 390 px phone: laid out in a frame that wide, the page is no wider (a screenshot is
    // cut to the window whatever the page's width). The frame's page reads the listing's width
    // from the same origin and writes it where --dump-dom shows it.
    let probe = t.data().join("archlinux/fit-390.html");
    std::fs::write(&probe, hostkit::testenv::fit::probe_page("iso/2026.11.01/", 390)).unwrap();
    let dom =
        String::from_utf8(chromium(&ns, &["--dump-dom", "--virtual-time-budget=10000"], "http://127.0.0.1/archlinux/fit-390.html").stdout)
            .unwrap();
    std::fs::remove_file(&probe).unwrap();
    let (scroll, viewport) = hostkit::testenv::fit::widths(&dom).unwrap_or_else(|| panic!("no widths in the probe's DOM: {dom}"));
    assert_eq!(viewport, 390, "the frame's viewport");
    assert!(scroll <= 390, "the listing is {scroll} px wide in a 390 px viewport: it scrolls sideways on a phone");
    screenshot(&ns, "listing-https-1000x600.png", "1000,600", &[], &format!("https://127.0.0.1{DIR}"));
    // The page's background, bottom right (below the table).
    assert!(light.luma(990, 590) > 230, "light background: {}", light.luma(990, 590));
    assert!(dark.luma(990, 590) < 40, "dark background: {}", dark.luma(990, 590));
    eprintln!("screenshots in {}", out_dir().display());
}

/// Sizes and dates through the stylesheet alone (libxslt, as inside nginx), at the unit edges.
#[test]
fn sizes_read_in_binary_units_with_exact_bytes_on_hover() {
    let t = Tree::new(&node("ci"));
    let xslt = PathBuf::from(&t.paths.nginx_dir).join("listing.xslt");
    let cases: &[(u64, &str)] = &[
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (10_180, "9.9 KiB"),
        (10_189, "10 KiB"),
        (10_240, "10 KiB"),
        (1_048_000, "1023 KiB"),
        (1_048_575, "1.0 MiB"),
        (1_234_567_890, "1.1 GiB"),
        (12_884_901_888, "12 GiB"),
        (1_099_511_627_776, "1.0 TiB"),
        (5_497_558_138_880, "5.0 TiB"),
    ];
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<list>\n");
    for (i, (b, _)) in cases.iter().enumerate() {
        xml += &format!("<file mtime=\"2026-01-0{}T09:05:59Z\" size=\"{b}\">f{i}</file>\n", i % 9 + 1);
    }
    xml += "</list>\n";
    let input = t.root.join("list.xml");
    std::fs::write(&input, xml).unwrap();
    let html = run(Command::new("xsltproc").args(["--stringparam", "path", "/a/"]).arg(&xslt).arg(&input));
    let page = t.root.join("list.html");
    std::fs::write(&page, html).unwrap();
    for (i, (b, want)) in cases.iter().enumerate() {
        let got = html_xpath(&page, &format!("normalize-space(//tr[td/a='f{i}']/td[@class='size'])"));
        assert_eq!(got, *want, "{b} bytes");
        let title = html_xpath(&page, &format!("string(//tr[td/a='f{i}']/td[@class='size']/@title)"));
        assert_eq!(title.replace(',', ""), format!("{b} bytes"));
    }
    assert_eq!(html_xpath(&page, "normalize-space(//tr[td/a='f0']/td[@class='date'])"), "2026-01-01 09:05");
    assert_eq!(html_xpath(&page, "string(//tr[td/a='f0']/td[@class='date']/@title)"), "2026-01-01 09:05:59 UTC");
    assert_eq!(html_xpath(&page, "normalize-space(//td[@class='name empty'])"), "");
    // An empty directory says so.
    std::fs::write(&input, "<?xml version=\"1.0\"?>\n<list>\n</list>\n").unwrap();
    let html = run(Command::new("xsltproc").args(["--stringparam", "path", "/a/b c/"]).arg(&xslt).arg(&input));
    std::fs::write(&page, html).unwrap();
    assert_eq!(html_xpath(&page, "normalize-space(//td[@class='name empty'])"), "This directory is empty.");
    assert_eq!(html_xpath(&page, "normalize-space(//h1)"), "Index of /a/b c/");
}
