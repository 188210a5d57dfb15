//! `mmbuild report` against the loopback fleet `status` is tested on (real nginx and rsync
//! daemons, `--resolve`): exact figures in report.json, a node that goes down keeping its last
//! known figures, and the pages as headless Chromium builds and draws them. Needs root, nginx,
//! rsync, chromium and xmllint.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::loopfleet::*;
use hostkit::testenv::png::Png;
use hostkit::testenv::{need, Need};
use serde_json::{json, Value};

const HOSTILE_A: &str = "<script>alert(1)</script>";
const HOSTILE_B: &str = "\"><img src=x onerror=alert(2)>";

fn sponsor(i: usize) -> String {
    match i {
        0 => HOSTILE_A.into(),
        1 => HOSTILE_B.into(),
        _ => "Sponsor Two".into(),
    }
}

fn needs() -> bool {
    match need(&[Need::Root, Need::Tool("nginx"), Need::Tool("rsync"), Need::Tool("chromium"), Need::Tool("xmllint")]) {
        Ok(()) => true,
        Err(why) => {
            hostkit::testenv::skip(&why);
            false
        }
    }
}

fn today() -> i64 {
    (now() / 86_400) as i64
}

fn date(back: i64) -> String {
    mmconfig::traffic::date_of(today() - back)
}

/// Node `k`'s (1-based) document: a day before the 90-day window, then 40 days ago, yesterday
/// and today; `extra` more bytes of archlinux over IPv4 today.
fn traffic_doc(name: &str, k: u64, extra: u64) -> String {
    json!({
        "version": 1, "node": name, "generated_unix": now(),
        "days": [
            {"date": date(100), "projects": {"archlinux": {"ipv4": {"http_2xx": 1, "http_bytes": 7777}}}},
            {"date": date(40), "projects": {"archlinux": {"ipv4": {"http_2xx": 2, "http_bytes": 1000 * k, "http_networks": 2}}}},
            {"date": date(1), "projects": {
                "archlinux": {"ipv6": {"http_2xx": 3, "http_4xx": 1, "http_bytes": 3000 * k}},
                "epel": {"ipv4": {"rsync_sessions": 1, "rsync_bytes": 500 * k}}}},
            {"date": date(0), "projects": {"archlinux": {"ipv4": {"http_3xx": 1, "http_bytes": 200 * k + extra}}}}
        ]
    })
    .to_string()
}

fn report(f: &Fixture, resolve: &[String], out: &Path) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mmbuild"));
    cmd.arg("--data").arg(common::repo()).arg("report").arg(&f.fleet).arg("--out").arg(out).args(["--timeout", "1", "--since", "90"]);
    for r in resolve {
        cmd.arg("--resolve").arg(r);
    }
    let o = cmd.output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn node<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["nodes"].as_array().unwrap().iter().find(|n| n["node"] == name).unwrap_or_else(|| panic!("no {name} in {r}"))
}

fn counts(v: &Value) -> [u64; 4] {
    ["bytes", "ipv6_bytes", "http_requests", "rsync_sessions"].map(|k| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}")))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// fresh0, lagging1 and fresh2 answer with traffic documents; down3 never does.
fn fleet() -> Fixture {
    let f = fixture_sponsored(&[Kind::Fresh, Kind::Lagging, Kind::Fresh, Kind::Down], false, None, &sponsor);
    for (k, name) in [(1, "fresh0"), (2, "lagging1"), (3, "fresh2")] {
        write(&f.root(name).join(".mm/traffic.json"), &traffic_doc(name, k, 0));
    }
    f
}

/// `name`'s ports sent to closed ones: the node is down from now on.
fn take_down(resolve: &[String], name: &str) -> Vec<String> {
    let closed4 = format!("127.0.0.1:{}", hostkit::testenv::free_port("127.0.0.1"));
    resolve
        .iter()
        .map(|r| if r.starts_with(&format!("{name}:")) { format!("{}={closed4}", r.split_once('=').unwrap().0) } else { r.clone() })
        .collect()
}

#[test]
fn one_node_down_one_lagging_one_fresh_and_the_down_one_keeps_its_last_figures() {
    if !needs() {
        return;
    }
    let f = fleet();
    let out = f.dir.path().join("report");
    let (code, stdout, stderr) = report(&f, &f.resolve, &out);
    assert_eq!(code, 5, "a lagging and a down node fail their checks\n{stdout}{stderr}");
    assert!(stdout.starts_with("loop: 4 node(s), 3 answered, 1 not (2 failing a check)"), "{stdout}");
    let r = read_json(&out.join("report.json"));
    assert_eq!(r["version"], 1);
    assert_eq!((r["since_days"].as_u64(), r["first_day"].as_str(), r["last_day"].as_str()), (Some(90), Some(&*date(89)), Some(&*date(0))));
    let names: Vec<&str> = r["nodes"].as_array().unwrap().iter().map(|n| n["node"].as_str().unwrap()).collect();
    assert_eq!(names, ["fresh0", "lagging1", "fresh2", "down3"], "inventory order");
    let gen1 = r["generated_unix"].as_u64().unwrap();
    for (k, name) in [(1, "fresh0"), (2, "lagging1"), (3, "fresh2")] {
        let n = node(&r, name);
        assert_eq!((n["answered"].as_bool(), n["figures_unix"].as_u64()), (Some(true), Some(gen1)), "{n}");
        // The day 100 days back is outside the window: 7777 bytes nowhere.
        assert_eq!(counts(&n["totals"]), [4700 * k, 3000 * k, 7, 1], "{name}");
        assert_eq!(counts(&n["projects"]["archlinux"]), [4200 * k, 3000 * k, 7, 0], "{name}");
        assert_eq!(counts(&n["projects"]["epel"]), [500 * k, 0, 0, 1], "{name}");
        assert_eq!(n["image_version"], FLEET_IMAGE);
        // Months: the days' own months, summing to the totals.
        let mut want: Vec<String> = [date(40), date(1), date(0)].iter().map(|d| d[..7].to_string()).collect();
        want.dedup();
        let months = n["months"].as_array().unwrap();
        assert_eq!(months.iter().map(|m| m["month"].as_str().unwrap()).collect::<Vec<_>>(), want);
        let sum: u64 = months.iter().flat_map(|m| m["projects"].as_object().unwrap().values()).map(|c| c["bytes"].as_u64().unwrap()).sum();
        assert_eq!(sum, 4700 * k);
    }
    assert_eq!((node(&r, "fresh0")["state"].as_str(), node(&r, "lagging1")["state"].as_str()), (Some("ok"), Some("fail")));
    let lag = node(&r, "lagging1")["lag"].as_array().unwrap().iter().find(|l| l["project"] == "archlinux").unwrap().clone();
    assert_eq!((lag["lag_seconds"].as_u64(), lag["allowed_seconds"].as_u64()), (Some(30 * 3600), Some(25 * 3600)));
    let down = node(&r, "down3");
    assert_eq!((down["answered"].as_bool(), down["figures_unix"].as_u64(), down["state"].as_str()), (Some(false), None, Some("fail")));
    assert_eq!(down["error"], "no answer over HTTP");
    assert_eq!(counts(&r["totals"]), [28_200, 18_000, 21, 3], "the fleet's totals");
    let days = r["days"].as_array().unwrap();
    assert_eq!(days.len(), 90);
    assert_eq!((days[89]["date"].as_str(), days[89]["projects"]["archlinux"]["bytes"].as_u64()), (Some(&*date(0)), Some(1200)));
    let mut files: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(
        files,
        [
            "index.html",
            "report.json",
            "sponsor-img-src-x-onerror-alert-2.html",
            "sponsor-script-alert-1-script.html",
            "sponsor-sponsor-two.html"
        ],
        "every page, nothing half-written"
    );

    // Next run, three hours later: fresh2 is down, fresh0 served 50 bytes more today.
    let mut before = r.clone();
    for n in before["nodes"].as_array_mut().unwrap() {
        if n["node"] == "fresh2" {
            n["figures_unix"] = json!(gen1 - 3 * 3600);
        }
    }
    std::fs::write(out.join("report.json"), before.to_string()).unwrap();
    write(&f.root("fresh0").join(".mm/traffic.json"), &traffic_doc("fresh0", 1, 50));
    let (code, stdout, stderr) = report(&f, &take_down(&f.resolve, "fresh2"), &out);
    assert_eq!(code, 5, "{stdout}{stderr}");
    let r = read_json(&out.join("report.json"));
    let gone = node(&r, "fresh2");
    assert_eq!((gone["answered"].as_bool(), gone["state"].as_str()), (Some(false), Some("fail")), "{gone}");
    assert_eq!(gone["figures_unix"].as_u64(), Some(gen1 - 3 * 3600), "the last known figures keep their time");
    assert_eq!(counts(&gone["totals"]), [14_100, 9000, 7, 1], "fresh2's last known figures");
    assert_eq!(gone["image_version"], FLEET_IMAGE);
    assert_eq!(gone["lag"][0]["lag_seconds"], 0, "the last known lag");
    assert_eq!(counts(&node(&r, "fresh0")["totals"]), [4750, 3000, 7, 1], "fresh0's figures are current");
    assert_eq!(counts(&r["totals"]), [28_250, 18_000, 21, 3]);
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    let row = |name: &str| index.split(&format!("data-node=\"{name}\"")).nth(1).and_then(|s| s.split("</tr>").next()).unwrap().to_string();
    assert!(row("fresh2").contains("down: last known figures, 3h00m old"), "{}", row("fresh2"));
    assert!(row("down3").contains("down: never reached, no figures"), "{}", row("down3"));
    assert!(row("fresh0").contains(">current<"), "{}", row("fresh0"));
}

#[test]
fn a_damaged_previous_report_stops_the_run_before_any_probe() {
    if !needs() {
        return;
    }
    let f = fixture(&[Kind::Down], false);
    let out = f.dir.path().join("report");
    write(&out.join("report.json"), "{\"version\": 1, \"nodes\": [");
    let (code, stdout, stderr) = report(&f, &f.resolve, &out);
    assert_eq!(code, 4, "{stdout}{stderr}");
    assert!(stderr.contains("report.json does not parse") && stderr.contains("move it aside"), "{stderr}");
    assert!(!out.join("index.html").exists());
}

fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn chromium(args: &[&str], url: &str) -> Vec<u8> {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .args(["120", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium {args:?} {url}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn xpath(file: &Path, expr: &str) -> String {
    let out = Command::new("xmllint").args(["--html", "--xpath", expr]).arg(file).output().unwrap();
    assert!(out.status.success(), "xmllint --xpath {expr} {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim_end_matches('\n').to_string()
}

/// The report's scroll width and viewport width in a 390 px frame.
fn phone_widths(dir: &Path) -> (u32, u32) {
    let probe = dir.join("fit-390.html");
    std::fs::write(&probe, hostkit::testenv::fit::probe_page("index.html", 390)).unwrap();
    // File pages are each their own origin unless file access between them is allowed.
    let args = ["--dump-dom", "--virtual-time-budget=10000", "--allow-file-access-from-files"];
    let dom = String::from_utf8(chromium(&args, &format!("file://{}", probe.display()))).unwrap();
    std::fs::remove_file(&probe).unwrap();
    hostkit::testenv::fit::widths(&dom).unwrap_or_else(|| panic!("no widths in the probe's DOM: {dom}"))
}

/// The URLs in a Chromium network log that a page asked for: requests Chromium makes for itself
/// (time, updates, accounts) have no origin as their initiator.
fn requests_by_pages(netlog: &Path) -> Vec<String> {
    let log: Value = serde_json::from_str(&std::fs::read_to_string(netlog).unwrap()).unwrap();
    let start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_u64().expect("the log names its event types");
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"].as_u64() == Some(start) && e["params"]["url"].is_string())
        .filter(|e| e["params"]["initiator"] != "not an origin")
        .map(|e| e["params"]["url"].as_str().unwrap().to_string())
        .filter(|u| !u.starts_with("file:"))
        .collect()
}

#[test]
fn the_pages_in_chromium_show_every_node_keep_hostile_names_inert_and_load_nothing() {
    if !needs() {
        return;
    }
    let f = fleet();
    let out = f.dir.path().join("report");
    let (code, stdout, stderr) = report(&f, &f.resolve, &out);
    assert_eq!(code, 5, "{stdout}{stderr}");
    let index = out.join("index.html");
    let url = format!("file://{}", index.display());

    // Nothing in the files points outside: no URL an element would load, no stylesheet import.
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "html") {
            let html = std::fs::read_to_string(&p).unwrap();
            for bad in ["src=", "url(", "@import", "<link", "<script", "<img", "<iframe", "http-equiv=\"refresh"] {
                assert!(!html.contains(bad), "{}: {bad}", p.display());
            }
            let hrefs: Vec<&str> = html.split("href=\"").skip(1).map(|s| s.split('"').next().unwrap()).collect();
            assert!(hrefs.iter().all(|h| h.starts_with("sponsor-") || *h == "index.html"), "{}: {hrefs:?}", p.display());
        }
    }

    // What Chromium builds from it, every request it made in its network log.
    let netlog = out_dir().join("netlog.json");
    let dom = chromium(&["--dump-dom", &format!("--log-net-log={}", netlog.display())], &url);
    let dom_file = out_dir().join("index-dom.html");
    std::fs::write(&dom_file, &dom).unwrap();
    let page_requests = requests_by_pages(&netlog);
    assert!(page_requests.is_empty(), "the page asked the network for {page_requests:?}");
    let x = |e: &str| xpath(&dom_file, e);
    assert_eq!(x("count(//tr[@class='node'])"), "4");
    for (name, s) in [("fresh0", HOSTILE_A), ("lagging1", HOSTILE_B), ("fresh2", "Sponsor Two"), ("down3", "Sponsor Two")] {
        assert_eq!(x(&format!("normalize-space(//tr[@data-node='{name}']/td[1])")), format!("{name}.mm.example.net"));
        // The sponsor is the link's text, and nothing else is inside the cell.
        assert_eq!(x(&format!("string(//tr[@data-node='{name}']/td[@class='sponsor'])")), s);
        assert_eq!(x(&format!("count(//tr[@data-node='{name}']/td[@class='sponsor']//*)")), "1");
    }
    assert_eq!(x("count(//script|//img|//iframe|//object|//embed|//@onerror|//@src)"), "0", "the hostile names made no element");
    assert_eq!(x("normalize-space(//tr[@data-node='lagging1']//ul[@class='lags']/li[@class='over'])"), "archlinux: 30h00m");
    assert_eq!(x("normalize-space(//tr[@data-node='down3']/td[contains(@class,'figures')])"), "down: never reached, no figures");
    // One chart per project, both axes labelled, the y ticks in human units up to the top.
    assert_eq!(x("count(//figure[@class='chart'])"), "2");
    assert_eq!(x("normalize-space((//figure[@class='chart'])[1]/figcaption)"), "archlinux");
    assert_eq!(x("string((//figure)[1]//*[local-name()='text'][contains(@class,'x-label')])"), "day (UTC)");
    assert_eq!(x("string((//figure)[1]//*[local-name()='text'][contains(@class,'y-label')])"), "bytes served per day");
    let ticks: Vec<String> =
        (1..=5).map(|i| x(&format!("string(((//figure)[1]//*[local-name()='text'][@class='y-tick'])[{i}])"))).collect();
    // archlinux's busiest day is yesterday: 3000 * (1 + 2 + 3) bytes = 17.6 KiB; steps of 5 KiB.
    assert_eq!(ticks, ["0 B", "5.00 KiB", "10.0 KiB", "15.0 KiB", "20.0 KiB"]);
    let dates: Vec<String> =
        (1..=3).map(|i| x(&format!("string(((//figure)[1]//*[local-name()='text'][@class='x-tick'])[{i}])"))).collect();
    assert_eq!(dates, [date(89), date(45), date(0)]);
    assert_eq!(x("normalize-space(//dl[@class='totals']//dd[@class='bytes'])"), "27.5 KiB");
    assert_eq!(x("normalize-space(//dl[@class='totals']//dd[@class='ipv6-share'])"), "63.8 %");

    // A sponsor's page: their nodes, per month, the IPv6 share.
    let sponsor_file = out_dir().join("sponsor-dom.html");
    std::fs::write(&sponsor_file, chromium(&["--dump-dom"], &format!("file://{}", out.join("sponsor-sponsor-two.html").display())))
        .unwrap();
    let s = |e: &str| xpath(&sponsor_file, e);
    assert_eq!(s("count(//tr[@class='node'])"), "2", "fresh2 and down3");
    assert_eq!(s("normalize-space(//h2[4])"), "Your nodes");
    assert_eq!(s("normalize-space(//dl[@class='totals']//dd[@class='bytes'])"), "13.8 KiB", "fresh2's 14 100 bytes");
    assert_eq!(s("normalize-space(//dl[@class='totals']//dd[@class='ipv6-share'])"), "63.8 %", "9000 of 14 100");
    assert_eq!(s("normalize-space((//table[@class='months']//tr[@class='month-total'])[last()]/td[1])"), &date(0)[..7]);
    let hostile = out.join("sponsor-script-alert-1-script.html");
    let hostile_dom = out_dir().join("sponsor-hostile-dom.html");
    std::fs::write(&hostile_dom, chromium(&["--dump-dom"], &format!("file://{}", hostile.display()))).unwrap();
    assert_eq!(xpath(&hostile_dom, "normalize-space(//h1)"), format!("{HOSTILE_A}: what your mirror served"));
    assert_eq!(xpath(&hostile_dom, "count(//script|//img)"), "0");

    // Seen at desktop and phone widths: drawn (not blank), and no sideways scrolling on a phone.
    for (size, w) in [("1280,900", 1280), ("390,844", 390)] {
        let file = out_dir().join(format!("index-{}.png", size.replace(',', "x")));
        let _ = std::fs::remove_file(&file);
        chromium(&[&format!("--screenshot={}", file.display()), &format!("--window-size={size}")], &url);
        let png = Png::read(&file);
        assert_eq!(png.width, w);
        assert!(png.lumas() > 8, "{}: blank ({} shades)", file.display(), png.lumas());
    }
    let (scroll, client) = phone_widths(&out);
    assert_eq!(client, 390);
    assert!(scroll <= 390, "the page is {scroll} px wide in a 390 px window: it scrolls sideways on a phone");
    eprintln!("screenshots and DOM dumps in {}", out_dir().display());
}

/// `scripts/bench`: `report` over 50 loopback nodes with traffic documents (the fixture of
/// `status`'s bench), --jobs 16, best of 3; and the size of the fleet's page it writes.
#[test]
#[ignore]
fn bench_fifty_nodes() {
    let f = fixture(&[Kind::Fresh; 50], false);
    for i in 0..50 {
        let name = format!("fresh{i}");
        write(&f.root(&name).join(".mm/traffic.json"), &traffic_doc(&name, i + 1, 0));
    }
    let out = f.dir.path().join("report");
    let mut best = std::time::Duration::MAX;
    for _ in 0..3 {
        let t0 = std::time::Instant::now();
        let (code, stdout, stderr) = report(&f, &f.resolve, &out);
        best = best.min(t0.elapsed());
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("50 node(s), 50 answered"), "{stdout}");
    }
    println!("BENCH report-50-nodes-seconds {:.2}", best.as_secs_f64());
    println!("BENCH report-page-bytes {}", std::fs::metadata(out.join("index.html")).unwrap().len());
}
