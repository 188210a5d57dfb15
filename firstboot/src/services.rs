//! The mirror services, rendered from the templates in `overlays/services/` (embedded at build
//! time, so the static binary is self-contained on AlmaLinux too).
//!
//! HTML escaping is off for the whole registry: every value from the fleet goes through a helper
//! named after its target language (`xml`, `xsl_attr`, `mailto`, `nginx_str`, `rsyncd_value`, `plain`).

use handlebars::{handlebars_helper, Handlebars};
pub use mmconfig::xml_escape;
use mmconfig::NodeConfig;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::files::{RenderedFile, Verb};

/// The admin account the fleet's ssh keys are installed for.
pub const ADMIN_USER: &str = mmconfig::ADMIN_USER;

const TEMPLATES: &[(&str, &str)] = &[
    ("nginx-main", include_str!("../../overlays/services/nginx.conf.hbs")),
    ("nginx-site", include_str!("../../overlays/services/nginx-site.conf.hbs")),
    ("log-format", include_str!("../../overlays/services/nginx-log-format.conf")),
    ("listing", include_str!("../../overlays/services/listing.xslt.hbs")),
    ("rsyncd", include_str!("../../overlays/services/rsyncd.conf.hbs")),
    ("motd", include_str!("../../overlays/services/rsyncd.motd.hbs")),
    ("nftables", include_str!("../../overlays/services/nftables.conf.hbs")),
    ("sshd", include_str!("../../overlays/services/sshd.conf.hbs")),
    ("sync-service", include_str!("../../overlays/services/mm-sync.service.hbs")),
    ("sync-timer", include_str!("../../overlays/services/mm-sync.timer.hbs")),
    ("traffic-service", include_str!("../../overlays/services/mm-traffic.service.hbs")),
    ("traffic-timer", include_str!("../../overlays/services/mm-traffic.timer.hbs")),
    ("certbot-service", include_str!("../../overlays/services/mm-certbot.service.hbs")),
    ("certbot-timer", include_str!("../../overlays/services/mm-certbot.timer.hbs")),
    ("push-keys", include_str!("../../overlays/services/push-authorized-keys.hbs")),
    ("image-metric", include_str!("../../overlays/services/mm-image.prom.hbs")),
    ("push-sudoers", include_str!("../../overlays/services/push-sudoers.hbs")),
    ("mount", include_str!("../../overlays/services/srv-mirror.mount.hbs")),
];
const ROBOTS: &str = include_str!("../../overlays/services/robots.txt");
// These three are the same on every node: in the image from the start, so a first boot finds
// them unchanged and restarts or reloads no unit for them; written here for installs that start
// from a distribution's own root (AlmaLinux).
const SYSCTL: &str = include_str!("../../overlays/rootfs/etc/sysctl.d/90-micromirror.conf");
const MODULES: &str = include_str!("../../overlays/rootfs/etc/modules-load.d/micromirror.conf");
const NGINX_LIMITS: &str = include_str!("../../overlays/rootfs/etc/systemd/system/nginx.service.d/micromirror.conf");
const AUTO_UPGRADES: &str = include_str!("../../overlays/services/auto-upgrades.conf");
const NODE_EXPORTER: &str = include_str!("../../overlays/services/node-exporter.default");

/// The target distribution: package and unit names differ between Debian and RHEL-likes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Our own image (Debian bookworm).
    Debian,
    /// AlmaLinux 9 installed from the kickstart.
    Rhel,
}

impl Family {
    /// From the target's /etc/os-release (`ID=`/`ID_LIKE=`); Debian when unknown.
    pub fn from_os_release(text: &str) -> Family {
        let rhel = text.lines().any(|l| {
            (l.starts_with("ID=") || l.starts_with("ID_LIKE="))
                && ["rhel", "almalinux", "rocky", "fedora", "centos"].iter().any(|id| l.contains(id))
        });
        if rhel {
            Family::Rhel
        } else {
            Family::Debian
        }
    }

    fn nginx_site(self) -> &'static str {
        match self {
            Family::Debian => "/etc/nginx/sites-enabled/default",
            Family::Rhel => "/etc/nginx/conf.d/micromirror.conf",
        }
    }

    /// The site as nginx.conf includes it: relative to the directory of nginx.conf, so a test
    /// tree's nginx.conf includes the test tree's site.
    fn nginx_site_include(self) -> &'static str {
        self.nginx_site().strip_prefix("/etc/nginx/").expect("the site lives under /etc/nginx")
    }

    /// The account nginx's workers run as (created by the distribution's package).
    fn nginx_user(self) -> &'static str {
        match self {
            Family::Debian => "www-data",
            Family::Rhel => "nginx",
        }
    }

    /// Where the distribution's dynamic modules (the XSLT filter among them) are loaded from.
    fn nginx_modules(self) -> &'static str {
        match self {
            Family::Debian => "/etc/nginx/modules-enabled/*.conf",
            Family::Rhel => "/usr/share/nginx/modules/*.conf",
        }
    }

    /// Service units of the mirror, in start order.
    pub fn units(self) -> &'static [&'static str] {
        match self {
            Family::Debian => &["nftables", "chrony", "lldpd", "ssh", "rsync", "nginx", "prometheus-node-exporter"],
            // node_exporter is not installed by the kickstart (no package name confirmed in EPEL 9).
            Family::Rhel => &["nftables", "chronyd", "lldpd", "sshd", "rsyncd", "nginx"],
        }
    }

    /// The OpenSSH server's unit.
    pub fn ssh_unit(self) -> &'static str {
        match self {
            Family::Debian => "ssh.service",
            Family::Rhel => "sshd.service",
        }
    }

    /// The ruleset file the distribution's nftables.service loads.
    pub fn nft_conf(self) -> &'static str {
        match self {
            Family::Debian => "/etc/nftables.conf",
            Family::Rhel => "/etc/sysconfig/nftables.conf",
        }
    }
}

/// Where things live; the defaults are the node's, tests point them into a temporary tree.
#[derive(Debug, Clone)]
pub struct Paths {
    pub family: Family,
    pub data_root: String,
    pub nginx_dir: String,
    pub log_dir: String,
    pub rsync_dir: String,
    pub http_port: u16,
    pub https_port: u16,
    /// Where certbot keeps live certificates (`<dir>/<fqdn>/fullchain.pem`).
    pub tls_dir: String,
    /// Webroot for Let's Encrypt challenges.
    pub acme_dir: String,
    /// The certificate exists (checked by the caller): nginx listens on 443 with it.
    pub tls_ready: bool,
    /// nginx's pid file and rsyncd's pid and per-module lock files.
    pub run_dir: String,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            family: Family::Debian,
            data_root: mmconfig::DATA_MOUNT.into(),
            nginx_dir: "/etc/nginx/micromirror".into(),
            log_dir: "/var/log/nginx".into(),
            rsync_dir: "/etc".into(),
            http_port: 80,
            https_port: 443,
            tls_dir: "/etc/letsencrypt/live".into(),
            acme_dir: format!("{}/acme", mmconfig::STATE_DIR),
            tls_ready: false,
            run_dir: "/run".into(),
        }
    }
}

/// What firstboot installs and enables for the mirror services.
#[derive(Debug, Clone)]
pub struct Services {
    pub files: Vec<RenderedFile>,
    /// (unit, target whose .wants it goes into)
    pub enable: Vec<(String, String)>,
    /// Some upstream pushes: the push account must exist.
    pub push_user: bool,
}

/// An XSLT attribute value: XML-escaped, and braces doubled so they are not XPath expressions.
pub fn xsl_attr(s: &str) -> String {
    xml_escape(s).replace('{', "{{").replace('}', "}}")
}

/// A `mailto:` URI for `addr` (RFC 6068): all but unreserved characters and `@` percent-encoded,
/// so the result is also safe as XML and XSLT attribute text.
pub fn mailto(addr: &str) -> String {
    let mut out = String::from("mailto:");
    for b in addr.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A double-quoted nginx string.
pub fn nginx_str(s: &str) -> String {
    let inner: String = s
        .chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' | '$' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("\"{inner}\"")
}

/// A quoted nginx regex matching `prefix` literally at the start of the URI.
pub fn nginx_prefix_regex(prefix: &str) -> String {
    let mut re = String::from("~^");
    for c in prefix.chars() {
        // Not `\$`: nginx_str makes it `\\\$`, which nginx reads as `\\$` (a literal backslash, then
        // the end anchor). In a class, nginx's `\$` is PCRE's literal `$` (found by fuzzing).
        if c == '$' {
            re.push_str("[$]");
            continue;
        }
        if "\\.+*?()|[]{}^$".contains(c) {
            re.push('\\');
        }
        re.push(c);
    }
    nginx_str(&re)
}

/// One word of a systemd ExecStart= line: double-quoted, with `%` (specifiers) and `$`
/// (variable expansion) doubled and quotes and backslashes escaped.
pub fn systemd_arg(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars().filter(|c| !c.is_control()) {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub use mmconfig::plain;

/// rsyncd.conf values run to the end of the line; `%VAR%` would be expanded by rsync.
pub fn rsyncd_value(s: &str) -> String {
    plain(s).replace('%', " ")
}

handlebars_helper!(xml: |s: str| xml_escape(s));
handlebars_helper!(xsl_attr_h: |s: str| xsl_attr(s));
handlebars_helper!(mailto_h: |s: str| mailto(s));
handlebars_helper!(nginx_str_h: |s: str| nginx_str(s));
handlebars_helper!(nginx_regex: |s: str| nginx_prefix_regex(s));
handlebars_helper!(plain_h: |s: str| plain(s));
handlebars_helper!(systemd_arg_h: |s: str| systemd_arg(s));
handlebars_helper!(rsyncd_value_h: |s: str| rsyncd_value(s));
handlebars_helper!(bare_path: |s: str| s.trim_end_matches('/').to_string());
/// A Prometheus text-format label value: backslash, quote and line feed escaped.
fn prom_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

handlebars_helper!(prom_label_h: |s: str| prom_label(s));
handlebars_helper!(join: |v: array| v.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", "));

fn registry() -> Handlebars<'static> {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    h.register_escape_fn(handlebars::no_escape);
    h.register_helper("xml", Box::new(xml));
    h.register_helper("xsl_attr", Box::new(xsl_attr_h));
    h.register_helper("mailto", Box::new(mailto_h));
    h.register_helper("nginx_str", Box::new(nginx_str_h));
    h.register_helper("nginx_regex", Box::new(nginx_regex));
    h.register_helper("plain", Box::new(plain_h));
    h.register_helper("systemd_arg", Box::new(systemd_arg_h));
    h.register_helper("rsyncd_value", Box::new(rsyncd_value_h));
    h.register_helper("join", Box::new(join));
    h.register_helper("bare_path", Box::new(bare_path));
    h.register_helper("prom_label", Box::new(prom_label_h));
    for (name, text) in TEMPLATES {
        h.register_template_string(name, *text).unwrap_or_else(|e| panic!("embedded template {name}: {e}"));
    }
    h
}

/// srv-mirror.mount for the data filesystem with this UUID (blkid's: hex digits and dashes).
pub fn render_mount_unit(uuid: &str) -> anyhow::Result<RenderedFile> {
    let uuid: String = uuid.chars().filter(|c| c.is_ascii_hexdigit() || *c == '-').collect();
    let ctx = json!({ "uuid": uuid, "data_mount": mmconfig::DATA_MOUNT, "data_label": mmconfig::DATA_LABEL });
    let text = registry().render("mount", &ctx).map_err(|e| anyhow::anyhow!("rendering srv-mirror.mount: {e}"))?;
    Ok(RenderedFile::new(MOUNT_UNIT, 0o644, text))
}

/// node_exporter's textfile naming the image this node runs, its slot and the last rollback
/// (the fleet's alerts compare and watch them).
pub fn render_image_metric(image_version: &str, os: Option<&mmconfig::os::OsStatus>) -> anyhow::Result<RenderedFile> {
    let rollback = os.and_then(|o| o.rollbacks.first()).map(|r| json!({ "version": r.version, "at": r.at.unwrap_or(0) }));
    let slot = os.and_then(|o| o.slot).map(|s| s.to_string()).unwrap_or_default();
    let text = registry()
        .render("image-metric", &json!({ "image_version": image_version, "slot": slot, "rollback": rollback }))
        .map_err(|e| anyhow::anyhow!("rendering mm_image.prom: {e}"))?;
    Ok(RenderedFile::new(format!("{}/mm_image.prom", mmconfig::METRICS_DIR), 0o644, text))
}

/// nginx's main configuration, the same path on both families.
pub const NGINX_CONF: &str = "/etc/nginx/nginx.conf";

/// The data filesystem's mount unit (its name is systemd's escaping of the mount point).
pub const MOUNT_UNIT: &str = "/etc/systemd/system/srv-mirror.mount";

/// Minute past the hour for a project's sync: stable for a node, spread across the fleet.
pub fn sync_minute(fqdn: &str, project: &str) -> u32 {
    let d = Sha256::digest(format!("{fqdn}/{project}").as_bytes());
    (u32::from(d[0]) << 8 | u32::from(d[1])) % 60
}

/// systemd OnCalendar for "every `hours` hours at `minute`".
pub fn on_calendar(hours: u32, minute: u32) -> String {
    match hours {
        0 | 1 => format!("*-*-* *:{minute:02}:00"),
        h if h < 24 => format!("*-*-* 00/{h}:{minute:02}:00"),
        _ => format!("*-*-* 03:{minute:02}:00"),
    }
}

pub fn render_services(cfg: &NodeConfig, paths: &Paths) -> anyhow::Result<Services> {
    let h = registry();
    let (v4, v6): (Vec<&String>, Vec<&String>) = cfg.fleet.admin_prefixes.iter().partition(|p| !p.contains(':'));
    // Only hosted projects whose upstream pushes, and only keys the fleet gave for them.
    let push: Vec<serde_json::Value> = cfg
        .projects
        .iter()
        .filter(|p| p.sync.push)
        .filter_map(|p| cfg.fleet.push_keys.get(&p.name).filter(|k| !k.is_empty()).map(|k| json!({"project": p.name, "keys": k})))
        .collect();
    let push_user = (!push.is_empty()).then_some(mmconfig::PUSH_USER);
    // Prefixes are validated CIDRs: safe as sshd patterns.
    let mut allow: Vec<String> = cfg.fleet.admin_prefixes.iter().map(|p| format!("{ADMIN_USER}@{p}")).collect();
    allow.extend(push_user.map(String::from));
    let allow_users = allow.join(" ");
    let ctx = json!({
        "fqdn": cfg.node.fqdn,
        "sponsor_name": cfg.node.sponsor.name,
        "sponsor_url": cfg.node.sponsor.url,
        "contact": cfg.fleet.contact,
        "https": cfg.fleet.https,
        "acme_dir": paths.acme_dir,
        "tls": (cfg.fleet.https && paths.tls_ready).then(|| json!({
            "cert": format!("{}/{}/fullchain.pem", paths.tls_dir, cfg.node.fqdn),
            "key": format!("{}/{}/privkey.pem", paths.tls_dir, cfg.node.fqdn),
        })),
        "admin_user": ADMIN_USER,
        "admin_v4": v4,
        "admin_v6": v6,
        "data_root": paths.data_root,
        "nginx_dir": paths.nginx_dir,
        "log_dir": paths.log_dir,
        "rsync_dir": paths.rsync_dir,
        "http_port": paths.http_port,
        "https_port": paths.https_port,
        "run_dir": paths.run_dir,
        "nginx_user": paths.family.nginx_user(),
        "nginx_modules": paths.family.nginx_modules(),
        "nginx_site": paths.family.nginx_site_include(),
        "projects": cfg.projects,
        "push": push,
        "push_user": push_user,
        "allow_users": allow_users,
    });
    let r = |name: &str| h.render(name, &ctx).map_err(|e| anyhow::anyhow!("rendering {name}: {e}"));
    // Who must be told of a change, and how (see `Verb`). rsyncd re-reads rsyncd.conf and its
    // motd on every connection, sshd its users' authorized_keys at every login, sudo its
    // sudoers, nginx robots.txt at every request: those files are read by no unit here.
    let nginx = |f: RenderedFile| f.read_by("nginx.service", Verb::Reload);
    let ssh = paths.family.ssh_unit();
    let mut files = vec![
        nginx(RenderedFile::new(NGINX_CONF, 0o644, r("nginx-main")?)),
        nginx(RenderedFile::new(paths.family.nginx_site(), 0o644, r("nginx-site")?)),
        // The XSLT filter compiles its stylesheet when it loads the configuration.
        nginx(RenderedFile::new(format!("{}/listing.xslt", paths.nginx_dir), 0o644, r("listing")?)),
        RenderedFile::new(format!("{}/robots.txt", paths.nginx_dir), 0o644, ROBOTS),
        RenderedFile::new(format!("{}/rsyncd.conf", paths.rsync_dir), 0o644, r("rsyncd")?),
        RenderedFile::new(format!("{}/rsyncd.motd", paths.rsync_dir), 0o644, r("motd")?),
        // Loaded by `nft -f` as one transaction: the ruleset is swapped, established flows stay.
        RenderedFile::new(paths.family.nft_conf(), 0o755, r("nftables")?).read_by("nftables.service", Verb::Reload),
        // A resource limit applies to a new main process only.
        RenderedFile::new("/etc/systemd/system/nginx.service.d/micromirror.conf", 0o644, NGINX_LIMITS)
            .read_by("nginx.service", Verb::Restart),
        // Both oneshots ran at boot; run again, they apply the file (modules before sysctl, by
        // systemd-sysctl's own ordering).
        RenderedFile::new("/etc/sysctl.d/90-micromirror.conf", 0o644, SYSCTL).read_by("systemd-sysctl.service", Verb::Restart),
        RenderedFile::new("/etc/modules-load.d/micromirror.conf", 0o644, MODULES).read_by("systemd-modules-load.service", Verb::Restart),
        RenderedFile::new("/etc/ssh/sshd_config.d/50-micromirror.conf", 0o644, r("sshd")?).read_by(ssh, Verb::Reload),
        RenderedFile::new(format!("/home/{ADMIN_USER}/.ssh/authorized_keys"), 0o600, cfg.fleet.admin_ssh_keys.join("\n") + "\n"),
        RenderedFile::new(format!("/etc/sudoers.d/{ADMIN_USER}"), 0o440, format!("{ADMIN_USER} ALL=(ALL) NOPASSWD: ALL\n")),
    ];
    if cfg.fleet.https {
        files.push(RenderedFile::new("/etc/systemd/system/mm-certbot.service", 0o644, r("certbot-service")?));
        files.push(
            RenderedFile::new("/etc/systemd/system/mm-certbot.timer", 0o644, r("certbot-timer")?)
                .read_by("mm-certbot.timer", Verb::Restart),
        );
    }
    if let Some(user) = push_user {
        files.push(RenderedFile::new(format!("/home/{user}/.ssh/authorized_keys"), 0o600, r("push-keys")?));
        files.push(RenderedFile::new(format!("/etc/sudoers.d/{user}"), 0o440, r("push-sudoers")?));
    }
    if paths.family == Family::Debian {
        files.push(RenderedFile::new("/etc/apt/apt.conf.d/20auto-upgrades", 0o644, AUTO_UPGRADES));
        // Its command-line arguments: read at start.
        files.push(
            RenderedFile::new("/etc/default/prometheus-node-exporter", 0o644, NODE_EXPORTER)
                .read_by("prometheus-node-exporter.service", Verb::Restart),
        );
    }
    let mut enable: Vec<(String, String)> =
        paths.family.units().iter().map(|u| (format!("{u}.service"), "multi-user.target".to_string())).collect();
    for p in &cfg.projects {
        let minute = sync_minute(&cfg.node.fqdn, &p.name);
        let pctx = json!({
            "name": p.name, "every_hours": p.sync.every_hours, "minute": minute,
            "on_calendar": on_calendar(p.sync.every_hours, minute), "data_root": paths.data_root,
            "directory": p.directory, "public_dir": mmconfig::PUBLIC_DIR, "sync_user": mmconfig::SYNC_USER,
            "state_dir": mmconfig::SYNC_STATE_DIR, "metrics_dir": mmconfig::METRICS_DIR,
        });
        let unit = |t: &str| h.render(t, &pctx).map_err(|e| anyhow::anyhow!("rendering {t} for {}: {e}", p.name));
        // A sync in progress is never interrupted: its next run reads the changed service.
        files.push(RenderedFile::new(format!("/etc/systemd/system/mm-sync-{}.service", p.name), 0o644, unit("sync-service")?));
        let timer = format!("mm-sync-{}.timer", p.name);
        files.push(RenderedFile::new(format!("/etc/systemd/system/{timer}"), 0o644, unit("sync-timer")?).read_by(&timer, Verb::Restart));
        enable.push((format!("mm-sync-{}.timer", p.name), "timers.target".into()));
    }
    if !cfg.projects.is_empty() {
        let tctx = json!({
            "data_root": paths.data_root, "public_dir": mmconfig::PUBLIC_DIR, "sync_user": mmconfig::SYNC_USER,
            "metrics_dir": mmconfig::METRICS_DIR,
        });
        let unit = |t: &str| h.render(t, &tctx).map_err(|e| anyhow::anyhow!("rendering {t}: {e}"));
        files.push(RenderedFile::new("/etc/systemd/system/mm-traffic.service", 0o644, unit("traffic-service")?));
        files.push(
            RenderedFile::new("/etc/systemd/system/mm-traffic.timer", 0o644, unit("traffic-timer")?)
                .read_by("mm-traffic.timer", Verb::Restart),
        );
        enable.push(("mm-traffic.timer".into(), "timers.target".into()));
    }
    if cfg.fleet.https {
        enable.push(("mm-certbot.timer".into(), "timers.target".into()));
    }
    if paths.family == Family::Rhel {
        // Debian's unattended-upgrades is configured by a file; dnf-automatic by its timer.
        enable.push(("dnf-automatic-install.timer".into(), "timers.target".into()));
    }
    Ok(Services { files, enable, push_user: push_user.is_some() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::node;

    const HOSTILE: &[&str] =
        &["\"; rm -rf / #", "O'Brien & <Sons>", "</xsl:stylesheet>", "]]>", "${x}", "line\nbreak", "{concat('a','b')}"];

    fn file<'a>(s: &'a Services, suffix: &str) -> &'a str {
        let f = s.files.iter().find(|f| f.path.to_string_lossy().ends_with(suffix)).unwrap_or_else(|| panic!("no {suffix}"));
        std::str::from_utf8(&f.contents).unwrap()
    }

    /// The text and href of the link in `<p class="sponsor">`, parsing the whole document
    /// (quick-xml checks that every end tag matches and fails on anything not well-formed).
    fn sponsor_link(doc: &str) -> (String, String) {
        use quick_xml::events::Event;
        let mut r = quick_xml::Reader::from_str(doc);
        r.config_mut().check_end_names = true;
        let (mut in_sponsor, mut in_link, mut text, mut href) = (false, false, String::new(), String::new());
        loop {
            match r.read_event().unwrap_or_else(|e| panic!("not well-formed at {}: {e}\n{doc}", r.buffer_position())) {
                Event::Start(e) if e.name().as_ref() == b"p" => {
                    in_sponsor = e.try_get_attribute("class").unwrap().is_some_and(|a| a.value.as_ref() == b"sponsor");
                }
                Event::Start(e) if in_sponsor && e.name().as_ref() == b"a" => {
                    in_link = true;
                    href = e.try_get_attribute("href").unwrap().unwrap().unescape_value().unwrap().into_owned();
                }
                Event::Text(t) if in_link => text.push_str(&t.unescape().unwrap()),
                Event::End(e) if e.name().as_ref() == b"a" => in_link = false,
                Event::End(e) if e.name().as_ref() == b"p" => in_sponsor = false,
                Event::Eof => break,
                _ => {}
            }
        }
        (text, href.replace("{{", "{").replace("}}", "}"))
    }

    #[test]
    fn nginx_prefix_regex_keeps_a_dollar_literal() {
        // nginx stores `\$` as is and PCRE reads `[\$]` as the character `$` (fuzz finding: the
        // former `\\\$` became a backslash and an end anchor).
        assert_eq!(nginx_prefix_regex("a$b"), r#""~^a[\$]b""#);
    }

    #[test]
    fn escapers() {
        assert_eq!(xml_escape("O'Brien & <Sons>"), "O&apos;Brien &amp; &lt;Sons&gt;");
        // Fuzz finding (escapers): U+FFFE/U+FFFF passed through, and XML refuses them.
        assert_eq!(xml_escape("Sp\u{ffff} \u{fffe}x\u{fffd}"), "Sp   x\u{fffd}");
        assert_eq!(xsl_attr("https://x/{a}"), "https://x/{{a}}");
        assert_eq!(mailto("o\"h{a}%<b>&$\\@x.net"), "mailto:o%22h%7Ba%7D%25%3Cb%3E%26%24%5C@x.net");
        assert_eq!(nginx_str("a\"b$c\\"), "\"a\\\"b\\$c\\\\\"");
        assert_eq!(nginx_prefix_regex("/a.b/"), "\"~^/a\\\\.b/\"");
        assert_eq!(plain("a\nb"), "a b");
        assert_eq!(systemd_arg("a\"b%c$d\\"), "\"a\\\"b%%c$$d\\\\\"");
        assert_eq!(rsyncd_value("100%PATH%"), "100 PATH ");
    }

    #[test]
    fn hostile_sponsor_stays_data_everywhere() {
        for name in HOSTILE {
            let mut cfg = node("ci");
            cfg.node.sponsor.name = name.to_string();
            cfg.node.sponsor.url = format!("https://x.example/?q={name}");
            let s = render_services(&cfg, &Paths::default()).unwrap();
            let xslt = file(&s, "listing.xslt");
            // The stylesheet stays one well-formed document with the name as the sponsor link's
            // text and the URL as its href (read back by an XML parser).
            let (text, href) = sponsor_link(xslt);
            assert_eq!(text, plain(name), "{xslt}");
            assert_eq!(href, plain(&cfg.node.sponsor.url), "{xslt}");
            let motd = file(&s, "rsyncd.motd");
            assert_eq!(motd.lines().count(), 3, "{name}: motd must stay 3 lines: {motd}");
            // The sponsor never reaches nginx or rsyncd configuration syntax.
            assert!(!file(&s, "sites-enabled/default").contains(name));
            assert!(!file(&s, "rsyncd.conf").contains(name));
        }
    }

    #[test]
    fn listing_only_for_directory_urls() {
        let s = render_services(&node("sonic"), &Paths::default()).unwrap();
        let site = file(&s, "sites-enabled/default");
        // The top level and each hosted project's directories, nothing else.
        assert_eq!(site.matches("xslt_stylesheet").count(), 4, "{site}");
        for (at, _) in site.match_indices("xslt_stylesheet") {
            let opened = site[..at].rfind("location ").unwrap();
            let block = &site[opened..at];
            assert!(
                block.starts_with("location = / {") || block.starts_with("location ~ /$ {"),
                "xslt outside a directory location: {block}"
            );
            assert_eq!(block.matches('}').count(), 0, "xslt outside a directory location: {block}");
        }
        for p in ["/ubuntu-releases/", "/fedora/", "/epel/"] {
            let bare = p.trim_end_matches('/');
            assert!(site.contains(&format!("location ^~ \"{p}\" {{")), "{p}");
            assert!(site.contains(&format!("location = \"{bare}\" {{\n        return 301 \"{p}\";")), "{p}");
        }
        assert!(site.contains("location / {\n        return 404;\n    }"), "{site}");
        assert!(!site.contains("\n    location ~ /$"), "a listing outside the hosted projects: {site}");
        assert!(site.contains("listen [::]:80 default_server backlog=4096;"));
    }

    #[test]
    fn timers_are_stable_per_node_and_respect_the_schedule() {
        let cfg = node("ziply");
        let a = render_services(&cfg, &Paths::default()).unwrap();
        let b = render_services(&cfg, &Paths::default()).unwrap();
        assert_eq!(file(&a, "mm-sync-epel.timer"), file(&b, "mm-sync-epel.timer"));
        assert!(file(&a, "mm-sync-epel.timer").contains("OnCalendar=*-*-* 00/4:"));
        assert!(file(&a, "mm-sync-archlinux.timer").contains("OnCalendar=*-*-* *:"));
        assert!(file(&a, "mm-sync-epel.service").contains("ExecStart=/usr/bin/mm-sync epel"));
        assert!(a.enable.contains(&("mm-sync-epel.timer".into(), "timers.target".into())));
        assert_eq!(on_calendar(6, 7), "*-*-* 00/6:07:00");
    }

    #[test]
    fn push_keys_become_forced_commands_for_pushed_projects_only() {
        let mut cfg = node("hurricane"); // hosts debian (push = true) and ubuntu
        let s = render_services(&cfg, &Paths::default()).unwrap();
        let keys = file(&s, "mmpush/.ssh/authorized_keys");
        assert!(s.push_user);
        assert_eq!(keys.lines().filter(|l| l.starts_with("restrict,")).count(), cfg.fleet.push_keys["debian"].len());
        assert!(
            keys.contains("restrict,command=\"/usr/bin/sudo -n /usr/bin/systemctl start --no-block mm-sync-debian.service\" ssh-ed25519 ")
        );
        assert!(file(&s, "sudoers.d/mmpush")
            .contains("mmpush ALL=(root) NOPASSWD: /usr/bin/systemctl start --no-block mm-sync-debian.service\n"));
        assert!(file(&s, "50-micromirror.conf").contains("AllowUsers mmadmin@192.0.2.0/24 mmadmin@2001:db8:ffff::/48 mmpush\n"));
        assert!(file(&s, "nftables.conf").contains("        tcp dport 22 accept\n"));
        // Without keys for a hosted pushed project: no account, no open ssh.
        cfg.fleet.push_keys.clear();
        let s = render_services(&cfg, &Paths::default()).unwrap();
        assert!(!s.push_user && !s.files.iter().any(|f| f.path.to_string_lossy().contains("mmpush")));
        assert!(!file(&s, "nftables.conf").contains("        tcp dport 22 accept\n"));
        assert!(file(&s, "50-micromirror.conf").contains("AllowUsers mmadmin@192.0.2.0/24 mmadmin@2001:db8:ffff::/48\n"));
    }

    #[test]
    fn almalinux_gets_its_own_paths_and_units() {
        let paths = Paths { family: Family::Rhel, ..Paths::default() };
        let s = render_services(&node("ci"), &paths).unwrap();
        let names: Vec<String> = s.files.iter().map(|f| f.path.display().to_string()).collect();
        assert!(
            names.contains(&"/etc/sysconfig/nftables.conf".to_string()) && !names.contains(&"/etc/nftables.conf".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"/etc/nginx/conf.d/micromirror.conf".to_string()));
        assert!(!names.iter().any(|n| n.starts_with("/etc/apt/") || n.starts_with("/etc/default/")), "{names:?}");
        let units: Vec<&str> = s.enable.iter().map(|(u, _)| u.as_str()).collect();
        assert!(
            units.contains(&"sshd.service") && units.contains(&"rsyncd.service") && units.contains(&"dnf-automatic-install.timer"),
            "{units:?}"
        );
        assert!(!units.contains(&"ssh.service"));
        assert_eq!(Family::from_os_release("NAME=\"AlmaLinux\"\nID=\"almalinux\"\nID_LIKE=\"rhel centos fedora\"\n"), Family::Rhel);
        assert_eq!(Family::from_os_release("ID=debian\n"), Family::Debian);
    }

    /// The directives of nginx.conf (comments dropped, one directive a line).
    fn directives(conf: &str) -> Vec<&str> {
        conf.lines().map(|l| l.split('#').next().unwrap().trim()).filter(|l| !l.is_empty()).collect()
    }

    #[test]
    fn nginx_main_config_takes_each_familys_paths() {
        let deb = render_services(&node("ci"), &Paths::default()).unwrap();
        let d = directives(file(&deb, "/etc/nginx/nginx.conf"));
        for want in [
            "user www-data;",
            "pid /run/nginx.pid;",
            "error_log /var/log/nginx/error.log;",
            "include /etc/nginx/modules-enabled/*.conf;",
            "include /etc/nginx/mime.types;",
            "include sites-enabled/default;",
        ] {
            assert!(d.contains(&want), "Debian: {want} missing from {d:?}");
        }
        let rhel = render_services(&node("ci"), &Paths { family: Family::Rhel, ..Paths::default() }).unwrap();
        let r = directives(file(&rhel, "/etc/nginx/nginx.conf"));
        for want in [
            "user nginx;",
            "pid /run/nginx.pid;",
            "include /usr/share/nginx/modules/*.conf;",
            "include /etc/nginx/mime.types;",
            "include conf.d/micromirror.conf;",
        ] {
            assert!(r.contains(&want), "AlmaLinux: {want} missing from {r:?}");
        }
        assert!(!r.iter().any(|l| l.contains("www-data") || l.contains("modules-enabled") || l.contains("sites-enabled")), "{r:?}");
        // The include names the file the site is rendered to, relative to nginx.conf's directory.
        assert!(rhel.files.iter().any(|f| f.path == std::path::Path::new("/etc/nginx/conf.d/micromirror.conf")));
    }

    #[test]
    fn nginx_holds_ten_thousand_clients_each_with_a_socket_and_a_file() {
        let s = render_services(&node("ci"), &Paths::default()).unwrap();
        let d = directives(file(&s, "/etc/nginx/nginx.conf"));
        let number = |key: &str| -> u64 {
            let l = d.iter().find(|l| l.starts_with(&format!("{key} "))).unwrap_or_else(|| panic!("no {key}"));
            l[key.len()..].trim().trim_end_matches(';').parse().unwrap()
        };
        // One worker alone can take them all (the kernel may hand one worker most connections).
        assert!(number("worker_connections") >= 10_000);
        assert!(number("worker_rlimit_nofile") >= 2 * number("worker_connections"));
        // systemd starts nginx with that limit already (SELinux may forbid nginx to raise it).
        let dropin = file(&s, "/etc/systemd/system/nginx.service.d/micromirror.conf");
        assert!(dropin.contains(&format!("\nLimitNOFILE={}\n", number("worker_rlimit_nofile"))), "{dropin}");
        for want in ["reset_timedout_connection on;", "sendfile_max_chunk 512k;", "send_timeout 60s;", "client_header_timeout 10s;"] {
            assert!(d.contains(&want), "{want}");
        }
        let site = directives(file(&s, "sites-enabled/default"));
        for want in
            ["limit_conn mm_conn 256;", "limit_req zone=mm_req burst=5000 nodelay;", "limit_conn_status 429;", "limit_req_status 429;"]
        {
            assert!(site.contains(&want), "{want}");
        }
    }

    #[test]
    fn rsync_modules_each_have_their_own_limit_and_lock_file() {
        let cfg = node("ziply");
        let s = render_services(&cfg, &Paths { run_dir: "/run/x".into(), ..Paths::default() }).unwrap();
        let conf = file(&s, "rsyncd.conf");
        let (global, modules) = conf.split_once("\n[").unwrap();
        assert!(!global.contains("max connections") && !global.contains("lock file"), "a global limit is shared: {global}");
        for p in &cfg.projects {
            let section = modules.split("\n[").find(|m| m.starts_with(&format!("{}]", p.rsync_module))).unwrap();
            assert!(section.contains("    max connections = 20\n"), "{section}");
            assert!(section.contains(&format!("    lock file = /run/x/rsyncd-{}.lock\n", p.rsync_module)), "{section}");
        }
        assert!(global.contains("pid file = /run/x/rsyncd.pid\n") && global.contains("timeout = 600\n"));
    }

    #[test]
    fn firewall_splits_admin_prefixes_by_family() {
        let s = render_services(&node("ci"), &Paths::default()).unwrap();
        let nft = file(&s, "nftables.conf");
        assert!(nft.contains("elements = { 192.0.2.0/24 }"));
        assert!(nft.contains("elements = { 2001:db8:ffff::/48 }"));
        assert!(nft.contains("policy drop"));
    }
}
