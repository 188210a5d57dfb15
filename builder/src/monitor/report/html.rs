//! The report's pages (pure): view models of the numbers, rendered through `overlays/report/*.hbs`
//! with handlebars' HTML escape on, so fleet and node text is inert wherever it lands (SVG text too).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use handlebars::Handlebars;
use mmconfig::fleet_report::{Counts, DayCounts, FleetReport, NodeEntry};
use serde::Serialize;

use super::chart::{self, Chart};
use super::model::{self, grouped, human_bytes, ipv6_share, Window};
use crate::monitor::health::marker::human;

/// The templates `render` needs, by name; each is `DIR/<name>.hbs`.
const TEMPLATES: [&str; 2] = ["index.html", "sponsor.html"];
const PARTIALS: [&str; 4] = ["style", "chart", "nodes", "figures"];

pub fn registry(dir: &Path) -> Result<Handlebars<'static>> {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    for name in TEMPLATES.iter().chain(&PARTIALS) {
        let path = dir.join(format!("{name}.hbs"));
        h.register_template_file(name, &path).with_context(|| format!("loading template {}", path.display()))?;
    }
    Ok(h)
}

#[derive(Serialize)]
struct Figures {
    bytes: String,
    ipv6_share: String,
    requests: String,
    rsync_sessions: String,
}

fn figures(c: &Counts) -> Figures {
    Figures {
        bytes: human_bytes(c.bytes),
        ipv6_share: ipv6_share(c),
        requests: grouped(c.http_requests),
        rsync_sessions: grouped(c.rsync_sessions),
    }
}

#[derive(Serialize)]
struct Row {
    name: String,
    figures: Figures,
}

fn rows(projects: &BTreeMap<String, Counts>) -> Vec<Row> {
    projects.iter().map(|(p, c)| Row { name: p.clone(), figures: figures(c) }).collect()
}

#[derive(Serialize)]
struct Lag {
    project: String,
    lag: String,
    over: bool,
}

#[derive(Serialize)]
struct NodeView {
    node: String,
    fqdn: String,
    sponsor: String,
    sponsor_page: String,
    state: String,
    answered: bool,
    /// `current`, `last known, 3h10m old` or `never reached`.
    figures_note: String,
    image: String,
    lags: Vec<Lag>,
    figures: Figures,
    findings: Vec<String>,
}

fn node_view(n: &NodeEntry, generated_unix: u64, pages: &BTreeMap<String, String>) -> NodeView {
    let figures_note = match (n.answered, n.figures_unix) {
        (true, _) => "current".to_string(),
        (false, Some(t)) => format!("down: last known figures, {} old", human(generated_unix.saturating_sub(t))),
        (false, None) => "down: never reached, no figures".to_string(),
    };
    NodeView {
        node: n.node.clone(),
        fqdn: n.fqdn.clone(),
        sponsor: n.sponsor.clone(),
        sponsor_page: pages.get(&n.sponsor).cloned().unwrap_or_default(),
        state: n.state.clone(),
        answered: n.answered,
        figures_note,
        image: n.image_version.clone().unwrap_or_else(|| "unknown".into()),
        lags: n
            .lag
            .iter()
            .map(|l| Lag {
                project: l.project.clone(),
                lag: l.lag_seconds.map_or_else(|| "unknown".into(), human),
                over: l.lag_seconds.is_some_and(|s| s > l.allowed_seconds),
            })
            .collect(),
        figures: figures(&n.totals),
        findings: n.findings.clone(),
    }
}

/// One chart per project: its bytes per day over the window, summed over `nodes`.
fn charts(days: &[DayCounts]) -> Vec<Chart> {
    let mut projects: Vec<&String> = days.iter().flat_map(|d| d.projects.keys()).collect();
    projects.sort();
    projects.dedup();
    projects
        .into_iter()
        .map(|p| {
            let series: Vec<(String, u64)> = days.iter().map(|d| (d.date.clone(), d.projects.get(p).map_or(0, |c| c.bytes))).collect();
            chart::bytes_per_day(p, &series)
        })
        .collect()
}

#[derive(Serialize)]
struct Common {
    fleet: String,
    generated: String,
    first_day: String,
    last_day: String,
    since_days: u32,
}

fn common(r: &FleetReport) -> Common {
    let c = mmconfig::marker::Civil::from_unix(r.generated_unix);
    Common {
        fleet: r.fleet.clone(),
        generated: format!("{:04}-{:02}-{:02} {:02}:{:02} UTC", c.year, c.month, c.day, c.hour, c.minute),
        first_day: r.first_day.clone(),
        last_day: r.last_day.clone(),
        since_days: r.since_days,
    }
}

#[derive(Serialize)]
struct SponsorLink {
    name: String,
    page: String,
}

#[derive(Serialize)]
struct IndexView {
    common: Common,
    healthy: bool,
    totals: Figures,
    projects: Vec<Row>,
    nodes: Vec<NodeView>,
    charts: Vec<Chart>,
    sponsors: Vec<SponsorLink>,
}

#[derive(Serialize)]
struct Month {
    month: String,
    projects: Vec<Row>,
    total: Figures,
}

#[derive(Serialize)]
struct SponsorView {
    common: Common,
    sponsor: String,
    sponsor_url: String,
    totals: Figures,
    projects: Vec<Row>,
    months: Vec<Month>,
    nodes: Vec<NodeView>,
    plural: bool,
    charts: Vec<Chart>,
}

/// Each sponsor's page file name (`sponsor-<slug>.html`), unique even when two names slug alike.
pub fn sponsor_pages(r: &FleetReport) -> BTreeMap<String, String> {
    let mut pages = BTreeMap::new();
    let mut taken = std::collections::BTreeSet::new();
    for n in &r.nodes {
        if pages.contains_key(&n.sponsor) {
            continue;
        }
        let base = model::slug(&n.sponsor);
        let mut name = format!("sponsor-{base}.html");
        let mut k = 2;
        while !taken.insert(name.clone()) {
            name = format!("sponsor-{base}-{k}.html");
            k += 1;
        }
        pages.insert(n.sponsor.clone(), name);
    }
    pages
}

/// Every page: `(file name, HTML)`, the fleet's `index.html` first.
pub fn render(h: &Handlebars, r: &FleetReport, window: Window) -> Result<Vec<(String, String)>> {
    let pages = sponsor_pages(r);
    let index = IndexView {
        common: common(r),
        healthy: r.healthy,
        totals: figures(&r.totals),
        projects: rows(&r.projects),
        nodes: r.nodes.iter().map(|n| node_view(n, r.generated_unix, &pages)).collect(),
        charts: charts(&r.days),
        sponsors: pages.iter().map(|(name, page)| SponsorLink { name: name.clone(), page: page.clone() }).collect(),
    };
    let mut out = vec![("index.html".to_string(), h.render("index.html", &index).context("rendering index.html")?)];
    for (sponsor, page) in &pages {
        let theirs: Vec<&NodeEntry> = r.nodes.iter().filter(|n| &n.sponsor == sponsor).collect();
        let (totals, projects) = model::sums(theirs.iter().copied());
        let mut days: Vec<_> = theirs.iter().flat_map(|n| n.days.iter().cloned()).collect();
        days.sort_by(|a, b| a.date.cmp(&b.date));
        let months = model::months_of(&days)
            .into_iter()
            .map(|m| {
                let mut total = Counts::default();
                m.projects.values().for_each(|c| total.add(c));
                Month { month: m.month, projects: rows(&m.projects), total: figures(&total) }
            })
            .collect();
        let view = SponsorView {
            common: common(r),
            sponsor: sponsor.clone(),
            sponsor_url: theirs.first().map(|n| n.sponsor_url.clone()).unwrap_or_default(),
            totals: figures(&totals),
            projects: rows(&projects),
            months,
            nodes: theirs.iter().map(|n| node_view(n, r.generated_unix, &pages)).collect(),
            plural: theirs.len() > 1,
            charts: charts(&model::sum_days(theirs.iter().copied(), window)),
        };
        out.push((page.clone(), h.render("sponsor.html", &view).with_context(|| format!("rendering {page}"))?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmconfig::fleet_report::DayCounts;

    const HOSTILE: &str = "\"><img src=x onerror=alert(1)><script>alert(2)</script>";

    fn report() -> FleetReport {
        let day = |date: &str, bytes| DayCounts {
            date: date.into(),
            projects: [("arch".to_string(), Counts { bytes, ipv6_bytes: bytes / 4, http_requests: 3, rsync_sessions: 1 })].into(),
        };
        let node = |name: &str, sponsor: &str| NodeEntry {
            node: name.into(),
            fqdn: format!("{name}.example"),
            sponsor: sponsor.into(),
            sponsor_url: "https://x.example/".into(),
            state: "ok".into(),
            answered: true,
            figures_unix: Some(0),
            days: vec![day("2026-12-06", 1 << 30), day("2026-12-07", 3 << 30)],
            projects: [("arch".to_string(), Counts { bytes: 4 << 30, ipv6_bytes: 1 << 30, http_requests: 6, rsync_sessions: 2 })].into(),
            ..Default::default()
        };
        let mut r = FleetReport {
            version: 1,
            fleet: "f".into(),
            generated_unix: 1_796_601_600,
            nodes: vec![node("a", HOSTILE), node("b", "Plain Sponsor")],
            ..Default::default()
        };
        model::fleet_totals(&mut r);
        r.days = model::sum_days(&r.nodes, Window { last: mmconfig::traffic::day_of("2026-12-07").unwrap(), days: 3 });
        r
    }

    #[test]
    fn fleet_text_is_escaped_everywhere_and_pages_link_only_to_each_other() {
        let h = registry(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays/report")).unwrap();
        let window = Window { last: mmconfig::traffic::day_of("2026-12-07").unwrap(), days: 3 };
        let pages = render(&h, &report(), window).unwrap();
        assert_eq!(
            pages.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["index.html", "sponsor-img-src-x-onerror-alert-1-script-alert-2-script.html", "sponsor-plain-sponsor.html"]
        );
        for (name, html) in &pages {
            assert!(!html.contains("<img") && !html.contains("<script"), "{name} carries the sponsor's markup");
            assert!(!html.contains("{{"), "{name}: an unrendered expression");
            for attr in ["src=\"", "href=\"", "url("] {
                for (i, _) in html.match_indices(attr) {
                    let target = &html[i + attr.len()..];
                    assert!(
                        !target.starts_with("http") && !target.starts_with("//"),
                        "{name}: {attr} loads from outside: {}",
                        &target[..40.min(target.len())]
                    );
                }
            }
        }
        assert!(pages[0].1.contains("&lt;script&gt;alert(2)&lt;/script&gt;"));
        assert!(pages[0].1.contains("<text class=\"y-tick\""), "charts drawn");
        assert!(pages[0].1.contains(">6.00 GiB</text>"), "y axis in GiB: two nodes of 3 GiB that day");
    }
}
