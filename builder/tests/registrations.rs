//! `mmbuild export registrations`: expected files for the example fleet, YAML/JSON parsed back,
//! hostile names, missing and invalid inventory fields, and the preflight against a real nginx
//! and rsync daemons on loopback. Needs python3 with PyYAML, cmark, nginx, rsync, curl and openssl
//! (install-deps), and root (nginx). After a deliberate change of the output, regenerate the
//! expected files with `MM_UPDATE_EXPECTED=1 cargo test -p mmbuild --test registrations example`
//! and read the diff before committing it.

use hostkit::testenv::free_port;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOozE4famK1j6NfXCWFhGYm39GKIAWKfHlpUtwM5i4R9 ops@example.net";

/// A sponsor name built to break every format it lands in (a line separator included: TOML and
/// the inventory accept it, YAML 1.1 parsers would fold it).
const HOSTILE: &str = "Evil \"Co\" & <b>x</b> *y* [l](javascript:alert(1)) | #z {{w}} \\ ' - \u{2028}end";
/// The same without the line separator, for the fields that must be one line (organisation, city).
const HOSTILE_LINE: &str = "Evil \"Co\" & <b>x</b> *y* [l](javascript:alert(1)) | #z {{w}} \\ ' - end";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn expected_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/registrations/example")
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn export(fleet: &Path, out: &Path, extra: &[&str]) -> Outcome {
    let o = Command::new(env!("CARGO_BIN_EXE_mmbuild"))
        .args(["export", "registrations"])
        .arg(fleet)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("MMBUILD_DATA", repo())
        .output()
        .unwrap();
    Outcome {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// `fleet` text in a temporary directory; returns (dir guard, fleet path, output dir).
fn with_fleet(text: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, text).unwrap();
    let out = dir.path().join("out");
    (dir, path, out)
}

/// One node hosting `projects`, with `node_extra` lines and `fleet_extra` lines added.
fn fleet(projects: &str, fleet_extra: &str, node_extra: &str) -> String {
    format!(
        r#"[fleet]
name = "t"
domain = "mm.example.net"
contact = "mirror@example.net"
admin_ssh_keys = ["{KEY}"]
admin_prefixes = ["192.0.2.0/24"]
{fleet_extra}

[defaults]
hardware = "termite"
dns = ["9.9.9.9"]

[[node]]
name = "alpha"
projects = [{projects}]
sponsor = {{ name = "Alpha", url = "https://alpha.example/" }}
ipv4 = {{ address = "192.0.2.10/31", gateway = "192.0.2.11" }}
{node_extra}
"#
    )
}

const ORG: &str = r#"organisation = { name = "T Mirrors", url = "https://t.example/" }"#;
const CONTACT: &str = r#"registration_contact = { name = "T Mirror Team", email = "reg@example.net" }"#;
const LOC: &str = r#"location = { country = "NL", state_province = "Noord-Holland", city = "Amsterdam", latitude = 52.37, longitude = 4.9 }
port_mbps = 1000"#;

#[test]
fn example_fleet_gives_the_expected_files_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let out = export(&repo().join("examples/fleet.toml"), dir.path(), &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let mut got = files_under(dir.path());
    assert!(got.remove(".mmbuild-registrations").is_some());
    if std::env::var_os("MM_UPDATE_EXPECTED").is_some() {
        let _ = std::fs::remove_dir_all(expected_dir());
        for (p, b) in &got {
            let dest = expected_dir().join(p);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::write(dest, b).unwrap();
        }
    }
    let want = files_under(&expected_dir());
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "the set of files differs");
    for (p, b) in &want {
        assert!(got[p] == *b, "{p} differs from builder/tests/data/registrations/example/{p}:\n{}", String::from_utf8_lossy(&got[p]));
    }
    // Same inventory, same bytes, also on a second run over the first one's output.
    let again = export(&repo().join("examples/fleet.toml"), dir.path(), &[]);
    assert_eq!(again.code, 0);
    let mut again_files = files_under(dir.path());
    again_files.remove(".mmbuild-registrations");
    assert_eq!(again_files, got);
    assert!(out.stdout.contains("epel+fedora/") && out.stdout.contains("mirrormanager  3 node(s)"), "{}", out.stdout);
}

fn yaml_to_json(path: &Path) -> Value {
    let o = Command::new("python3")
        .args(["-c", "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1], encoding='utf-8')), sys.stdout)"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "PyYAML rejects {}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn hostile_fleet() -> String {
    // Every project of every format, on two nodes sharing one hostile sponsor.
    let esc = HOSTILE.replace('\\', "\\\\").replace('"', "\\\"");
    let line = HOSTILE_LINE.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        r#"[fleet]
name = "t"
domain = "mm.example.net"
contact = "mirror@example.net"
registration_contact = {{ name = "{line}", email = "registrations@example.net" }}
admin_ssh_keys = ["{KEY}"]
admin_prefixes = ["192.0.2.0/24"]
https = true
organisation = {{ name = "{line}", url = "https://t.example/?a=1&b=2" }}

[defaults]
hardware = "termite"
dns = ["9.9.9.9"]
port_mbps = 10000
location = {{ country = "DE", state_province = "{line}", city = "{line}", latitude = 50.11, longitude = 8.68 }}

[[node]]
name = "alpha"
projects = ["almalinux", "epel", "debian", "ubuntu", "ubuntu-releases", "opensuse", "archlinux"]
sponsor = {{ name = "{esc}", url = "https://evil.example/?q=1&r=`x`" }}
ipv4 = {{ address = "192.0.2.10/31", gateway = "192.0.2.11" }}
ipv6 = {{ address = "2001:db8:10::2/64", gateway = "2001:db8:10::1" }}
asn = 4200000000
"#
    )
}

#[test]
fn hostile_names_stay_data_in_every_format() {
    // A private ASN is refused first, with its own message.
    let (_d, path, out) = with_fleet(&hostile_fleet());
    let o = export(&path, &out, &[]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stderr.contains("asn 4200000000 is a private AS number (RFC 6996)"), "{}", o.stderr);

    let (_d, path, out) = with_fleet(&hostile_fleet().replace("asn = 4200000000", "asn = 3320"));
    let o = export(&path, &out, &[]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);

    // YAML: PyYAML reads back exactly the inventory's strings.
    let y = yaml_to_json(&out.join("almalinux/mirrors.d/alpha.mm.example.net.yml"));
    assert_eq!(y["name"], "alpha.mm.example.net");
    assert_eq!(y["sponsor"], HOSTILE);
    assert_eq!(y["sponsor_url"], "https://evil.example/?q=1&r=`x`");
    assert_eq!(y["email"], "registrations@example.net");
    assert_eq!(y["update_frequency"], "3h");
    assert_eq!(y["asn"], 3320);
    assert_eq!(y["private"], false);
    assert_eq!(y["address"]["http"], "http://alpha.mm.example.net/almalinux/");
    assert_eq!(y["address"]["https"], "https://alpha.mm.example.net/almalinux/");
    assert_eq!(y["address"]["rsync"], "rsync://alpha.mm.example.net/almalinux/");
    assert_eq!(y["geolocation"]["country"], "DE");
    assert_eq!(y["geolocation"]["state_province"], HOSTILE_LINE);
    assert_eq!(y["geolocation"]["city"], HOSTILE_LINE);
    assert_eq!(y.as_object().unwrap().len(), 9, "{y}");

    // JSON: serde's, so parsing back gives the same strings.
    let mm: Value = serde_json::from_slice(&std::fs::read(out.join("epel/checklist.json")).unwrap()).unwrap();
    assert_eq!(mm["site"]["name"], HOSTILE_LINE);
    assert_eq!(mm["hosts"][0]["comment"], format!("Micro Mirror node hosted by {HOSTILE} (https://evil.example/?q=1&r=`x`)"));
    assert_eq!(mm["hosts"][0]["asn"], 3320);
    assert_eq!(mm["hosts"][0]["bandwidth_int"], 10000);
    assert_eq!(
        mm["hosts"][0]["categories"][0]["urls"],
        serde_json::json!([
            "http://alpha.mm.example.net/epel/",
            "https://alpha.mm.example.net/epel/",
            "rsync://alpha.mm.example.net/epel/"
        ])
    );
    let deb: Value = serde_json::from_slice(&std::fs::read(out.join("debian/form.json")).unwrap()).unwrap();
    assert_eq!(deb[0]["sponsor_name"], HOSTILE);
    assert_eq!(deb[0]["archive_architectures"], serde_json::json!(["amd64", "arm64", "i386"]));
    assert_eq!(deb[0]["trace_file"], "project/trace/alpha.mm.example.net");
    assert_eq!(deb[0]["maintainer_name"], HOSTILE_LINE);
    let lp: Value = serde_json::from_slice(&std::fs::read(out.join("ubuntu-releases/launchpad.json")).unwrap()).unwrap();
    assert_eq!(lp[0]["display_name"], HOSTILE);
    assert_eq!(lp[0]["content"], "CD Image");
    assert_eq!(lp[0]["speed"], "10 Gbps");
    let req: Value = serde_json::from_slice(&std::fs::read(out.join("opensuse/request.json")).unwrap()).unwrap();
    let fields: BTreeMap<String, String> = req["nodes"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["key"].as_str().unwrap().to_string(), f["value"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(fields["coordinates"], "50.11, 8.68");
    assert_eq!(fields["addresses"], "192.0.2.10, 2001:db8:10::2");
    assert_eq!(fields["sponsor"], format!("{HOSTILE} (https://evil.example/?q=1&r=`x`)"));

    // deb822: the stanza keeps its fields, one line each.
    let ml = std::fs::read_to_string(out.join("debian/Mirrors.masterlist")).unwrap();
    let keys: Vec<&str> = ml.lines().filter(|l| !l.starts_with(' ')).filter_map(|l| l.split_once(": ").map(|(k, _)| k)).collect();
    assert_eq!(
        keys,
        ["Site", "Type", "Archive-architecture", "Archive-http", "Archive-rsync", "Country", "Location", "Sponsor", "Maintainer"],
        "{ml}"
    );
    // deb822 values are single lines: the line separator became a space.
    let flat = HOSTILE.replace('\u{2028}', " ");
    assert!(ml.contains(&format!("Sponsor: {flat} https://evil.example/?q=1&r=`x`\n")), "{ml}");
    assert!(ml.contains(&format!("Maintainer: {HOSTILE_LINE} <registrations@example.net>\n")), "{ml}");

    // Markdown: cmark renders every page; the name arrives as text, never as markup.
    for page in [
        "README.md",
        "epel/checklist.md",
        "debian/form.md",
        "ubuntu-releases/launchpad.md",
        "opensuse/request.md",
        "almalinux/README.md",
        "archlinux/request.md",
    ] {
        let html = Command::new("cmark").arg(out.join(page)).output().unwrap();
        assert!(html.status.success(), "{page}");
        let html = String::from_utf8(html.stdout).unwrap();
        assert!(!html.contains("<b>") && !html.contains("javascript:alert(1)\"") && !html.contains("<em>y</em>"), "{page}: {html}");
        if page != "README.md" {
            assert!(
                html.contains("Evil &quot;Co&quot; &amp; &lt;b&gt;x&lt;/b&gt; *y* [l](javascript:alert(1)) | #z {{w}} \\ ' - "),
                "{page}: {html}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Each upstream's rules, as the upstream states them, checked on what the export wrote (the
// hostile fleet: every format, every field filled). Break a rule in a renderer and its row fails.

/// One rule an upstream states about its format.
struct Rule {
    /// Where the upstream states it: repository and file.
    source: &'static str,
    rule: &'static str,
    holds: fn(&Value) -> bool,
}

fn broken_rules(value: &Value, rules: &[Rule]) -> Vec<String> {
    rules.iter().filter(|r| !(r.holds)(value)).map(|r| format!("{} [{}]", r.rule, r.source)).collect()
}

fn hostile_export() -> (tempfile::TempDir, PathBuf) {
    let (d, path, out) = with_fleet(&hostile_fleet().replace("asn = 4200000000", "asn = 3320"));
    let o = export(&path, &out, &[]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    (d, out)
}

fn is_str(v: &Value) -> bool {
    v.is_string()
}

const ALMA_SCHEMA: &str = "AlmaLinux/mirrors json_schemas/mirror_config/v1.json";

/// The mirror schema's properties (AlmaLinux/mirrors json_schemas/mirror_config/v1.json).
const ALMA_PROPERTIES: [&str; 13] = [
    "cloud_type",
    "cloud_regions",
    "name",
    "address",
    "address_optional",
    "geolocation",
    "update_frequency",
    "sponsor",
    "sponsor_url",
    "email",
    "asn",
    "subnets",
    "private",
];

const ALMA_RULES: &[Rule] = &[
    Rule {
        source: ALMA_SCHEMA,
        rule: "required: name, address, update_frequency, sponsor, sponsor_url",
        holds: |m| ["name", "address", "update_frequency", "sponsor", "sponsor_url"].iter().all(|k| m.get(k).is_some()),
    },
    Rule {
        source: ALMA_SCHEMA,
        rule: "only the schema's properties",
        holds: |m| m.as_object().unwrap().keys().all(|k| ALMA_PROPERTIES.contains(&k.as_str())),
    },
    Rule {
        source: ALMA_SCHEMA,
        rule: "name matches ^(?!(http:\\/\\/|https:\\/\\/)).*(?<!(\\/))$: no http:// or https:// prefix, no trailing slash",
        holds: |m| m["name"].as_str().is_some_and(|n| !n.starts_with("http://") && !n.starts_with("https://") && !n.ends_with('/')),
    },
    Rule {
        source: ALMA_SCHEMA,
        rule: "address: an object whose http, https, rsync, ftp are strings, with http or https (anyOf required)",
        holds: |m| {
            let a = m["address"].as_object();
            a.is_some_and(|a| a.values().all(is_str) && (a.contains_key("http") || a.contains_key("https")))
        },
    },
    Rule {
        source: ALMA_SCHEMA,
        rule: "update_frequency, sponsor, sponsor_url, email: strings",
        holds: |m| ["update_frequency", "sponsor", "sponsor_url", "email"].iter().all(|k| is_str(&m[k])),
    },
    Rule {
        source: ALMA_SCHEMA,
        rule: "geolocation: country a string, state_province and city strings or null",
        holds: |m| {
            let g = &m["geolocation"];
            is_str(&g["country"]) && ["state_province", "city"].iter().all(|k| g[k].is_string() || g[k].is_null())
        },
    },
    Rule {
        source: ALMA_SCHEMA,
        rule: "asn: an integer or a list of integers",
        holds: |m| m.get("asn").is_none_or(|a| a.is_u64() || a.as_array().is_some_and(|l| l.iter().all(Value::is_u64))),
    },
    Rule { source: ALMA_SCHEMA, rule: "private: a boolean", holds: |m| m.get("private").is_none_or(Value::is_boolean) },
];

#[test]
fn almalinux_files_follow_almalinuxs_schema() {
    let (_d, out) = hostile_export();
    let m = yaml_to_json(&out.join("almalinux/mirrors.d/alpha.mm.example.net.yml"));
    assert_eq!(broken_rules(&m, ALMA_RULES), Vec::<String>::new(), "{m}");
    // Each row can fail: the same file with one rule broken.
    let mut bad = m.clone();
    bad["name"] = "https://alpha.mm.example.net/".into();
    bad["address"] = serde_json::json!({ "rsync": "rsync://alpha.mm.example.net/almalinux/" });
    bad["asn"] = "3320".into();
    bad["continent"] = "Europe".into();
    assert_eq!(broken_rules(&bad, ALMA_RULES).len(), 4, "{:?}", broken_rules(&bad, ALMA_RULES));
}

const MM_FORMS: &str = "fedora-infra/mirrormanager2 mirrormanager2/forms.py";

const MM_RULES: &[Rule] = &[
    Rule {
        source: MM_FORMS,
        rule: "AddSiteForm: name and org_url required",
        holds: |c| ["name", "org_url"].iter().all(|k| c["site"][k].as_str().is_some_and(|v| !v.is_empty())),
    },
    Rule {
        source: MM_FORMS,
        rule: "AddHostForm: name and country required, bandwidth_int required and a number",
        holds: |c| {
            c["hosts"].as_array().unwrap().iter().all(|h| {
                ["name", "country"].iter().all(|k| h[k].as_str().is_some_and(|v| !v.is_empty())) && h["bandwidth_int"].is_u64()
            })
        },
    },
    Rule {
        source: MM_FORMS,
        rule: "AddHostForm: asn optional, a number; private, internet2, asn_clients booleans",
        holds: |c| {
            c["hosts"].as_array().unwrap().iter().all(|h| {
                (h["asn"].is_null() || h["asn"].is_u64()) && ["private", "internet2", "asn_clients"].iter().all(|k| h[k].is_boolean())
            })
        },
    },
    Rule {
        source: MM_FORMS,
        rule: "AddHostCategoryForm/AddHostCategoryUrlForm: a category and its URLs (required); always_up2date is the admins' (the crawler skips such a category, mirrormanager2/crawler/crawler.py)",
        holds: |c| {
            c["hosts"].as_array().unwrap().iter().flat_map(|h| h["categories"].as_array().unwrap()).all(|cat| {
                cat.get("always_up2date").is_none()
                    && is_str(&cat["category"])
                    && cat["urls"].as_array().is_some_and(|u| !u.is_empty() && u.iter().all(is_str))
            })
        },
    },
];

#[test]
fn mirrormanager_checklists_hold_mirrormanagers_fields() {
    let (_d, out) = hostile_export();
    let c: Value = serde_json::from_slice(&std::fs::read(out.join("epel/checklist.json")).unwrap()).unwrap();
    assert_eq!(broken_rules(&c, MM_RULES), Vec::<String>::new(), "{c}");
    let mut bad = c.clone();
    bad["hosts"][0]["categories"][0]["always_up2date"] = true.into();
    bad["hosts"][0]["bandwidth_int"] = "10 Gbit/s".into();
    assert_eq!(broken_rules(&bad, MM_RULES).len(), 2);
}

const LP_MIRROR: &str = "launchpad lib/lp/registry/interfaces/distributionmirror.py";

const LP_RULES: &[Rule] = &[
    Rule {
        source: LP_MIRROR,
        rule: "only IDistributionMirror's fields",
        holds: |e| {
            const FIELDS: [&str; 12] = [
                "name",
                "display_name",
                "description",
                "http_base_url",
                "https_base_url",
                "ftp_base_url",
                "rsync_base_url",
                "speed",
                "country",
                "content",
                "official_candidate",
                "whiteboard",
            ];
            e.as_object().unwrap().keys().all(|k| FIELDS.contains(&k.as_str()))
        },
    },
    Rule {
        source: "launchpad lib/lp/app/validators/name.py",
        rule: "name: required, name_validator's [a-z0-9][a-z0-9+.-]+",
        holds: |e| {
            e["name"].as_str().is_some_and(|n| {
                n.len() > 1
                    && n.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                    && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b))
            })
        },
    },
    Rule {
        source: LP_MIRROR,
        rule: "display_name (titled \"Organisation\"): the name of the organization hosting this mirror",
        holds: |e| e["display_name"].as_str().is_some_and(|n| !n.is_empty() && !n.contains("://")),
    },
    Rule {
        source: LP_MIRROR,
        rule: "http/https/rsync_base_url: their own scheme, a trailing slash",
        holds: |e| {
            [("http_base_url", "http://"), ("https_base_url", "https://"), ("rsync_base_url", "rsync://")]
                .iter()
                .all(|(k, scheme)| e[k].is_null() || e[k].as_str().is_some_and(|u| u.starts_with(scheme) && u.ends_with('/')))
        },
    },
    Rule {
        source: LP_MIRROR,
        rule: "mirrorMustHaveHTTPOrFTPURL: an HTTP(S) or FTP URL",
        holds: |e| ["http_base_url", "https_base_url", "ftp_base_url"].iter().any(|k| e[k].is_string()),
    },
    Rule {
        source: LP_MIRROR,
        rule: "speed: a MirrorSpeed title",
        holds: |e| {
            const SPEEDS: [&str; 15] = [
                "128 Kbps", "256 Kbps", "512 Kbps", "1 Mbps", "2 Mbps", "10 Mbps", "45 Mbps", "100 Mbps", "1 Gbps", "2 Gbps", "4 Gbps",
                "10 Gbps", "20 Gbps", "50 Gbps", "100 Gbps",
            ];
            e["speed"].as_str().is_some_and(|s| SPEEDS.contains(&s))
        },
    },
    Rule {
        source: LP_MIRROR,
        rule: "content: a MirrorContent title",
        holds: |e| matches!(e["content"].as_str(), Some("Archive" | "CD Image")),
    },
    Rule { source: LP_MIRROR, rule: "official_candidate: a boolean", holds: |e| e["official_candidate"].is_boolean() },
];

#[test]
fn launchpad_entries_speak_launchpads_vocabularies() {
    let (_d, out) = hostile_export();
    for (project, content) in [("ubuntu", "Archive"), ("ubuntu-releases", "CD Image")] {
        let e: Value = serde_json::from_slice(&std::fs::read(out.join(format!("{project}/launchpad.json"))).unwrap()).unwrap();
        let e = &e[0];
        assert_eq!(broken_rules(e, LP_RULES), Vec::<String>::new(), "{e}");
        assert_eq!((e["content"].as_str(), e["display_name"].as_str()), (Some(content), Some(HOSTILE)), "{e}");
        let md = std::fs::read_to_string(out.join(format!("{project}/launchpad.md"))).unwrap();
        assert!(md.contains("| Organisation | Evil") && md.contains(&format!("| Content | {content} |")), "{md}");
    }
    let e: Value = serde_json::from_slice(&std::fs::read(out.join("ubuntu/launchpad.json")).unwrap()).unwrap();
    let mut bad = e[0].clone();
    bad["speed"] = "2.5 Gbit/s".into();
    bad["content"] = "Release".into();
    bad["organisation_url"] = "https://evil.example/".into();
    bad["name"] = "Alpha_Mirror".into();
    assert_eq!(broken_rules(&bad, LP_RULES).len(), 4);
}

/// Debian's Mirrors.masterlist as python-debian's deb822 reads it, one object per stanza.
fn masterlist_stanzas(path: &Path) -> Value {
    let o = Command::new("python3")
        .args(["-c", "import json, sys; from debian import deb822; json.dump([dict(p) for p in deb822.Deb822.iter_paragraphs(open(sys.argv[1], encoding='utf-8'))], sys.stdout)"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "deb822 rejects {}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

const MASTERLIST: &str = "Debian webwml english/mirror/Mirrors.masterlist";

const DEBIAN_RULES: &[Rule] = &[
    Rule {
        source: MASTERLIST,
        rule: "a leaf stanza: Site, Type, Archive-architecture, Archive-http, Archive-rsync, Country, Location, Sponsor, Maintainer",
        holds: |s| {
            let mut want =
                ["Site", "Type", "Archive-architecture", "Archive-http", "Archive-rsync", "Country", "Location", "Sponsor", "Maintainer"];
            want.sort_unstable();
            s.as_object().unwrap().keys().map(String::as_str).eq(want) && s["Type"] == "leaf"
        },
    },
    Rule {
        source: MASTERLIST,
        rule: "Archive-architecture: Debian architecture names, space-separated",
        holds: |s| {
            s["Archive-architecture"].as_str().is_some_and(|a| {
                !a.is_empty()
                    && a.split(' ').all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
            })
        },
    },
    Rule {
        source: MASTERLIST,
        rule: "Archive-http: the path on the site, with leading and trailing slash; Archive-rsync: the module path with a trailing slash",
        holds: |s| {
            s["Archive-http"].as_str().is_some_and(|p| p.starts_with('/') && p.ends_with('/'))
                && s["Archive-rsync"].as_str().is_some_and(|p| !p.starts_with('/') && p.ends_with('/'))
        },
    },
    Rule {
        source: MASTERLIST,
        rule: "Country: the ISO code and the masterlist's name for the country (\"DE Germany\", \"TR Turkey\")",
        holds: |s| {
            s["Country"].as_str().is_some_and(|c| {
                c.split_once(' ')
                    .is_some_and(|(code, name)| code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) && !name.is_empty())
            })
        },
    },
    Rule {
        source: MASTERLIST,
        rule: "Sponsor: name then URL; Maintainer: name <e-mail>",
        holds: |s| {
            s["Sponsor"]
                .as_str()
                .is_some_and(|v| v.rsplit_once(' ').is_some_and(|(_, url)| url.starts_with("https://") || url.starts_with("http://")))
                && s["Maintainer"].as_str().is_some_and(|v| {
                    v.rsplit_once(" <").is_some_and(|(name, mail)| !name.is_empty() && mail.ends_with('>') && mail.contains('@'))
                })
        },
    },
];

#[test]
fn debian_stanzas_read_as_debians_masterlist() {
    let (_d, out) = hostile_export();
    let stanzas = masterlist_stanzas(&out.join("debian/Mirrors.masterlist"));
    assert_eq!(stanzas.as_array().unwrap().len(), 1, "{stanzas}");
    let s = &stanzas[0];
    assert_eq!(broken_rules(s, DEBIAN_RULES), Vec::<String>::new(), "{s}");
    assert_eq!(s["Maintainer"], format!("{HOSTILE_LINE} <registrations@example.net>"));
    assert_eq!(s["Country"], "DE Germany");
    let mut bad = s.clone();
    bad.as_object_mut().unwrap().remove("Maintainer");
    bad["Archive-http"] = "debian".into();
    assert_eq!(broken_rules(&bad, DEBIAN_RULES).len(), 3, "{:?}", broken_rules(&bad, DEBIAN_RULES));
}

/// A fleet of a dual-stack and an IPv6-only node, both hosting AlmaLinux and Arch.
fn v6_fleet(dual: bool) -> String {
    let dual_node = if dual {
        "\n[[node]]\nname = \"dual\"\nprojects = [\"almalinux\", \"archlinux\"]\nsponsor = { name = \"D\", url = \"https://d.example/\" }\n\
ipv4 = { address = \"192.0.2.20/31\", gateway = \"192.0.2.21\" }\nipv6 = { address = \"2001:db8:20::2/64\", gateway = \"2001:db8:20::1\" }\n"
    } else {
        ""
    };
    format!(
        "[fleet]\nname = \"t\"\ndomain = \"mm.example.net\"\ncontact = \"mirror@example.net\"\nadmin_ssh_keys = [\"{KEY}\"]\n\
admin_prefixes = [\"192.0.2.0/24\"]\n\n[defaults]\nhardware = \"termite\"\ndns = [\"2620:fe::fe\"]\n{LOC}\n\n\
[[node]]\nname = \"v6\"\nprojects = [\"almalinux\", \"archlinux\"]\nsponsor = {{ name = \"V\", url = \"https://v.example/\" }}\n\
ipv6 = {{ address = \"2001:db8:10::2/64\", gateway = \"2001:db8:10::1\" }}\n{dual_node}"
    )
}

#[test]
fn ipv6_only_nodes_get_no_application_where_the_checker_needs_ipv4() {
    const WHY: &str = "no IPv4 address: AlmaLinux's mirror service resolves only the mirror's A record, so a mirror without one never gets status ok and is never served (give the node an IPv4 address to register it)";
    // Next to a dual-stack node: the application carries that node only and names the other.
    let (_d, path, out) = with_fleet(&v6_fleet(true));
    let o = export(&path, &out, &[]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains(&format!("\n    v6 almalinux: not written: {WHY}\n")), "{}", o.stdout);
    let files: Vec<String> = files_under(&out.join("almalinux")).into_keys().collect();
    assert_eq!(files, ["README.md", "mirrors.d/dual.mm.example.net.yml"]);
    let readme = std::fs::read_to_string(out.join("almalinux/README.md")).unwrap();
    assert!(readme.contains("## Not written") && readme.contains(&format!("- `v6` (almalinux): {WHY}")), "{readme}");
    // Arch's checker reaches either family: the IPv6-only node is in its request.
    assert!(std::fs::read_to_string(out.join("archlinux/request.md")).unwrap().contains("v6.mm.example.net"));
    let o = export(&path, &out, &["--json"]);
    let apps: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(apps[0]["dir"], "almalinux");
    assert_eq!(apps[0]["nodes"], serde_json::json!(["dual"]));
    assert_eq!(apps[0]["not_written"], serde_json::json!([{ "node": "v6", "project": "almalinux", "why": WHY }]));
    assert_eq!(apps[1]["not_written"], serde_json::json!([]));

    // Alone: no AlmaLinux directory at all, and the index and stdout say why.
    let (_d, path, out) = with_fleet(&v6_fleet(false));
    let o = export(&path, &out, &[]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("almalinux      0 node(s)  NOT WRITTEN\n    v6 almalinux: not written: no IPv4 address"), "{}", o.stdout);
    assert!(o.stdout.ends_with("1 application(s)\n"), "{}", o.stdout);
    assert!(!out.join("almalinux").exists());
    let index = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        index.contains("| almalinux | almalinux |")
            && index.contains("| **not written** |")
            && index.contains("- `v6` (almalinux): no IPv4 address"),
        "{index}"
    );
}

#[test]
fn one_application_covers_several_nodes_where_the_upstream_allows() {
    let text = fleet("\"epel\", \"fedora\", \"archlinux\"", ORG, LOC)
        + r#"
[[node]]
name = "beta"
projects = ["epel", "archlinux"]
sponsor = { name = "Beta", url = "https://beta.example/" }
ipv4 = { address = "192.0.2.20/31", gateway = "192.0.2.21" }
location = { country = "US", state_province = "Oregon", city = "Portland" }
port_mbps = 10000
"#;
    let (_d, path, out) = with_fleet(&text);
    let o = export(&path, &out, &["--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let apps: Value = serde_json::from_str(&o.stdout).unwrap();
    let dirs: Vec<&str> = apps.as_array().unwrap().iter().map(|a| a["dir"].as_str().unwrap()).collect();
    assert_eq!(dirs, ["archlinux", "epel+fedora"]);
    assert_eq!(apps[1]["nodes"], serde_json::json!(["alpha", "beta"]));
    assert_eq!(apps[1]["ready"], Value::Null);
    let mm: Value = serde_json::from_slice(&std::fs::read(out.join("epel+fedora/checklist.json")).unwrap()).unwrap();
    let cats: Vec<Vec<&str>> = mm["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["categories"].as_array().unwrap().iter().map(|c| c["category"].as_str().unwrap()).collect())
        .collect();
    assert_eq!(cats, [vec!["Fedora EPEL", "Fedora Linux"], vec!["Fedora EPEL"]]);
    // Arch asks for one request per node.
    let md = std::fs::read_to_string(out.join("archlinux/request.md")).unwrap();
    assert_eq!(md.matches("## Request for").count(), 2, "{md}");

    // --node and --project narrow the export.
    let out2 = out.with_file_name("out2");
    let o = export(&path, &out2, &["--node", "beta", "--project", "epel"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = export(&path, &out2, &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    std::fs::write(out2.join("notes.txt"), "the operator's own file").unwrap();
    let o = export(&path, &out2, &["--node", "beta", "--project", "epel"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    // What the wider export wrote and this one did not is gone; the operator's file stays.
    let files: Vec<String> = files_under(&out2).into_keys().collect();
    assert_eq!(files, [".mmbuild-registrations", "README.md", "epel/README.md", "epel/checklist.json", "epel/checklist.md", "notes.txt"]);
    let o = export(&path, &out2, &["--node", "gamma"]);
    assert_eq!(
        (o.code, o.stderr.trim_end()),
        (1, format!("{}: error: --node gamma: no such node (nodes: alpha, beta)", path.display()).as_str())
    );
    let o = export(&path, &out2, &["--project", "debian"]);
    assert!(
        o.code == 1 && o.stderr.contains("--project debian: no selected node hosts it (hosted: archlinux, epel, fedora)"),
        "{}",
        o.stderr
    );
}

/// (fleet text, the one error expected) for the missing-field rules.
#[test]
fn missing_fields_name_the_projects_that_need_them() {
    let cases = [
        (
            fleet("\"almalinux\", \"debian\"", &format!("{ORG}\n{CONTACT}"), "port_mbps = 1000"),
            "fleet.toml:15:8: error: node \"alpha\": location is missing: the almalinux and debian registrations need it (add location = { country = \"NL\", state_province = \"...\", city = \"...\" } to the node or to [defaults])",
        ),
        (
            fleet("\"almalinux\"", ORG, "location = { country = \"NL\", city = \"Amsterdam\" }"),
            "fleet.toml:14:8: error: node \"alpha\": location.state_province is missing: the almalinux registration needs it (add state_province = \"...\" to its location to the node or to [defaults])",
        ),
        (
            fleet("\"epel\", \"rocky\"", "", LOC),
            "fleet.toml:1:1: error: [fleet] organisation is missing: the epel and rocky registrations need it (add organisation = { name = \"...\", url = \"https://...\" })",
        ),
        (
            fleet("\"opensuse\"", ORG, "location = { country = \"NL\" }\nport_mbps = 1000"),
            "fleet.toml:14:8: error: node \"alpha\": location.latitude/longitude is missing: the opensuse registration needs it (add latitude = 52.37, longitude = 4.90 to its location to the node or to [defaults])",
        ),
        (
            fleet("\"debian\"", "registration_contact = \"reg@example.net\"", LOC),
            "fleet.toml:1:1: error: [fleet] registration_contact.name is missing: the debian registration needs it (add registration_contact = { name = \"...\", email = \"...\" })",
        ),
        (
            fleet("\"videolan\"", ORG, "location = { country = \"NL\" }"),
            "fleet.toml:14:8: error: node \"alpha\": port_mbps is missing: the videolan registration needs it (add port_mbps = 1000 to the node or to [defaults])",
        ),
    ];
    for (text, want) in cases {
        let (_d, path, out) = with_fleet(&text);
        let o = export(&path, &out, &[]);
        let first = o.stderr.lines().next().unwrap_or("").replace(&format!("{}", path.display()), "fleet.toml");
        assert_eq!((o.code, first.as_str()), (1, want), "{}", o.stderr);
        assert!(o.stderr.contains("nothing written") && !out.exists(), "{}", o.stderr);
    }
    // mmbuild check does not ask for registration facts: images build without them.
    let (_d, path, _) = with_fleet(&fleet("\"almalinux\"", "", ""));
    let o = Command::new(env!("CARGO_BIN_EXE_mmbuild")).arg("check").arg(&path).env("MMBUILD_DATA", repo()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Invalid registration facts are errors of `mmbuild check` itself, one fixture per rule.
#[test]
fn invalid_fields_are_errors_with_positions() {
    let cases: &[(&str, &str, &str)] = &[
        ("", "location = { country = \"XX\" }", "18:24: error: node \"alpha\": location.country \"XX\" is not an ISO 3166-1 alpha-2 country code (two letters such as NL, US, DE; the list is overlays/registration/countries.tsv)"),
        ("", "location = { country = \"nl\" }", "18:24: error: node \"alpha\": location.country \"nl\" is not an ISO 3166-1 alpha-2 country code (write it in upper case: \"NL\")"),
        ("", "location = { country = \"UK\" }", "18:24: error: node \"alpha\": location.country \"UK\" is not an ISO 3166-1 alpha-2 country code (the United Kingdom's code is GB)"),
        ("", "location = { country = \"NL\", region = \"x\" }", "18:30: error: node \"alpha\": unknown field `region`, expected one of `country`, `state_province`, `city`, `latitude`, `longitude` (remove it or fix its spelling)"),
        ("", "location = { country = \"NL\", city = \"a\\nb\" }", "18:37: error: node \"alpha\": location.city contains control characters (newlines, tabs): write it on one line"),
        ("", "location = { country = \"NL\", latitude = 91.0, longitude = 0.0 }", "18:41: error: node \"alpha\": location.latitude 91 is out of range (-90 to 90 degrees, decimal)"),
        ("", "location = { country = \"NL\", latitude = 52.0 }", "18:41: error: node \"alpha\": location has a latitude but no longitude: give both or neither"),
        ("", "asn = 0", "18:7: error: node \"alpha\": asn 0 is out of range (AS numbers are 1 to 4294967295)"),
        ("", "asn = 4294967296", "18:7: error: node \"alpha\": asn 4294967296 is out of range (AS numbers are 1 to 4294967295)"),
        ("", "asn = 64512", "18:7: error: node \"alpha\": asn 64512 is a private AS number (RFC 6996): give the sponsor network's public AS number"),
        ("", "asn = 64500", "18:7: error: node \"alpha\": asn 64500 is reserved for documentation (RFC 5398): give the sponsor network's real AS number"),
        ("", "asn = 23456", "18:7: error: node \"alpha\": asn 23456 is AS_TRANS (RFC 6793), a placeholder for 4-byte AS numbers: give the network's real AS number"),
        ("", "asn = 4294967295", "18:7: error: node \"alpha\": asn 4294967295 is reserved (RFC 7300)"),
        ("", "asn = 100000", "18:7: error: node \"alpha\": asn 100000 is reserved by IANA and not assigned to any network"),
        ("", "port_mbps = 0", "18:13: error: node \"alpha\": port_mbps 0 is not a port speed (Mbit/s, 1 to 400000: 1000 for 1 GbE, 10000 for 10 GbE)"),
        ("organisation = { name = \"O\", url = \"ftp://o.example/\" }", "", "7:36: error: [fleet] organisation.url \"ftp://o.example/\" must start with http:// or https://"),
        ("organisation = { name = \" \", url = \"https://o.example/\" }", "", "7:25: error: [fleet] organisation.name is empty"),
        ("registration_contact = \"nobody\"", "", "7:24: error: [fleet] registration_contact \"nobody\" is not an e-mail address (write user@example.net)"),
        ("registration_contact = { name = \"A\", email = \"nobody\" }", "", "7:46: error: [fleet] registration_contact.email \"nobody\" is not an e-mail address (write user@example.net)"),
        ("registration_contact = { name = \"a\\nb\", email = \"a@example.net\" }", "", "7:33: error: [fleet] registration_contact.name contains control characters (newlines, tabs): write it on one line"),
        ("registration_contact = { name = \"A\", mail = \"a@example.net\" }", "", "7:38: error: [fleet]: unknown field `mail`, expected `name` or `email` (remove it or fix its spelling)"),
        ("registration_contact = 5", "", "7:24: error: [fleet]: invalid type: integer `5`, expected an e-mail address or { name = \"...\", email = \"...\" }"),
    ];
    for (fleet_extra, node_extra, want) in cases {
        let (_d, path, _) = with_fleet(&fleet("\"epel\"", fleet_extra, node_extra));
        let o = Command::new(env!("CARGO_BIN_EXE_mmbuild")).arg("check").arg(&path).env("MMBUILD_DATA", repo()).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{node_extra}{fleet_extra}: {stderr}");
        let first = stderr.lines().next().unwrap_or("");
        assert_eq!(first, format!("{}:{want}", path.display()), "{node_extra}{fleet_extra}");
    }
    // [defaults] values are checked where they are written.
    let text = fleet("\"epel\"", "", "").replace("dns = [\"9.9.9.9\"]", "dns = [\"9.9.9.9\"]\nasn = 65000");
    let (_d, path, _) = with_fleet(&text);
    let o = Command::new(env!("CARGO_BIN_EXE_mmbuild")).arg("check").arg(&path).env("MMBUILD_DATA", repo()).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.starts_with(&format!("{}:12:7: error: [defaults] asn 65000 is a private AS number", path.display())), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Preflight against real daemons.

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn wait_port(addr: &str, port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect((addr, port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {addr}:{port}");
}

/// `date -u` (and with `-R` RFC 2822) of `unix`, as ftpsync and mm-sync write a trace.
fn date_u(unix: u64, rfc2822: bool) -> String {
    let o =
        Command::new("date").args(["-u", "-d", &format!("@{unix}")]).args(rfc2822.then_some("-R")).env("LC_ALL", "POSIX").output().unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// An EPEL tree with the markers the preflight reads and a trace finished `age` seconds ago.
fn epel_tree(root: &Path, fqdn: &str, age: u64, repomd: &str) {
    for v in ["9", "10"] {
        let d = root.join(format!("epel/{v}/Everything/x86_64/repodata"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("repomd.xml"), repomd).unwrap();
    }
    std::fs::create_dir_all(root.join("epel/.mirror-trace")).unwrap();
    let t = now() - age;
    std::fs::write(root.join(format!("epel/.mirror-trace/{fqdn}")), format!("{}\nDate: {}\n", date_u(t, false), date_u(t, true))).unwrap();
}

/// nginx and one rsync daemon per tree on loopback: `(name, address, has an epel module)`;
/// `tls` = (certificate, key) adds HTTPS on every address.
struct Loopback {
    http: u16,
    https: u16,
    rsync: u16,
    _daemons: Vec<Daemon>,
}

impl Loopback {
    fn start(root: &Path, trees: &[(&str, &str, bool)], tls: Option<(&Path, &Path)>) -> Loopback {
        let (http, https, rsync) = (free_port("127.0.0.1"), free_port("127.0.0.1"), free_port("127.0.0.1"));
        let mut servers = String::new();
        for (name, ip, _) in trees {
            servers.push_str(&format!(" server {{ listen {ip}:{http}; root {}; autoindex on; }}\n", root.join(name).display()));
            if let Some((cert, key)) = tls {
                servers.push_str(&format!(
                    " server {{ listen {ip}:{https} ssl; ssl_certificate {}; ssl_certificate_key {}; root {}; }}\n",
                    cert.display(),
                    key.display(),
                    root.join(name).display()
                ));
            }
        }
        let conf = root.join("nginx.conf");
        let r = root.display();
        std::fs::write(
            &conf,
            format!(
                "user root;\npid {r}/nginx.pid;\nerror_log {r}/error.log;\nevents {{}}\nhttp {{\n access_log off;\n client_body_temp_path {r}/tmp;\n\
 proxy_temp_path {r}/tmp;\n fastcgi_temp_path {r}/tmp;\n uwsgi_temp_path {r}/tmp;\n scgi_temp_path {r}/tmp;\n{servers}}}\n"
            ),
        )
        .unwrap();
        let mut daemons = vec![Daemon(
            Command::new("nginx")
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )];
        for (name, ip, epel) in trees {
            let module = if *epel {
                format!("[epel]\n path = {}\n read only = yes\n", root.join(name).join("epel").display())
            } else {
                String::new()
            };
            let rconf = root.join(format!("rsyncd-{name}.conf"));
            std::fs::write(
                &rconf,
                format!("address = {ip}\nport = {rsync}\nuse chroot = no\npid file = {r}/rsyncd-{name}.pid\nlog file = {r}/rsyncd-{name}.log\n[other]\n path = {r}\n{module}"),
            )
            .unwrap();
            daemons.push(Daemon(
                Command::new("rsync").args(["--daemon", "--no-detach"]).arg(format!("--config={}", rconf.display())).spawn().unwrap(),
            ));
        }
        for (_, ip, _) in trees {
            wait_port(ip, http);
            wait_port(ip, rsync);
            if tls.is_some() {
                wait_port(ip, https);
            }
        }
        Loopback { http, https, rsync, _daemons: daemons }
    }
}

/// A fleet of `names`, each hosting epel.
fn preflight_fleet(names: &[&str], https: bool) -> String {
    let nodes: String = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "\n[[node]]\nname = \"{n}\"\nprojects = [\"epel\"]\nsponsor = {{ name = \"S\", url = \"https://s.example/\" }}\n\
ipv4 = {{ address = \"192.0.2.{}/31\", gateway = \"192.0.2.{}\" }}\n{LOC}\n",
                10 + 2 * i,
                11 + 2 * i
            )
        })
        .collect();
    format!(
        "[fleet]\nname = \"t\"\ndomain = \"mm.example.net\"\ncontact = \"mirror@example.net\"\nadmin_ssh_keys = [\"{KEY}\"]\n\
admin_prefixes = [\"192.0.2.0/24\"]\nhttps = {https}\n{ORG}\n\n[defaults]\nhardware = \"termite\"\ndns = [\"9.9.9.9\"]\n{nodes}"
    )
}

const REPOMD: &str =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\"><revision>1</revision></repomd>\n";

#[test]
fn preflight_marks_empty_stale_and_half_reachable_nodes_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // 127.0.0.1 serves a complete fresh tree, 127.0.0.2 an empty one, 127.0.0.3 a complete
    // tree whose last sync is two days old and whose repomd.xml was altered on the way.
    let trees = [("full", "127.0.0.1"), ("empty", "127.0.0.2"), ("stale", "127.0.0.3")];
    for (name, _) in trees {
        std::fs::create_dir_all(root.join(name).join("epel")).unwrap();
    }
    epel_tree(&root.join("full"), "full.mm.example.net", 600, REPOMD);
    epel_tree(&root.join("stale"), "stale.mm.example.net", 2 * 86400, "<html>hosted by</html>");

    let lo = Loopback::start(root, &[("full", "127.0.0.1", true), ("empty", "127.0.0.2", false), ("stale", "127.0.0.3", true)], None);
    let (hp, rp) = (lo.http, lo.rsync);
    let text = preflight_fleet(&["full", "empty", "stale"], false);
    let (_d, path, out) = with_fleet(&text);
    let (hp_s, rp_s) = (hp.to_string(), rp.to_string());
    let probe = [
        "--check",
        "--http-port",
        &hp_s,
        "--rsync-port",
        &rp_s,
        "--timeout",
        "5",
        "--connect",
        "full=127.0.0.1",
        "--connect",
        "empty=127.0.0.2",
        "--connect",
        "stale=127.0.0.3",
    ];

    // The complete, fresh node alone is ready.
    let mut args = probe.to_vec();
    args.extend(["--node", "full", "--json"]);
    let o = export(&path, &out, &args);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let apps: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(apps[0]["ready"], true, "{apps}");
    let readme = std::fs::read_to_string(out.join("epel/README.md")).unwrap();
    assert!(readme.contains("Every node passed the preflight") && readme.contains("| `full.mm.example.net` | epel | ready |"), "{readme}");

    // All three: exit 5, and each problem named.
    let mut args = probe.to_vec();
    args.push("--json");
    let o = export(&path, &out, &args);
    assert_eq!(o.code, 5, "{}{}", o.stdout, o.stderr);
    let apps: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(apps[0]["ready"], false);
    let problems = &apps[0]["problems"];
    assert!(problems.get("full epel").is_none(), "{problems}");
    let empty: Vec<&str> = problems["empty epel"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(
        empty,
        [
            "IPv4 127.0.0.2: http://empty.mm.example.net/epel/9/Everything/x86_64/repodata/repomd.xml: HTTP 404 (the upstream's checker reads it)",
            "IPv4 127.0.0.2: http://empty.mm.example.net/epel/10/Everything/x86_64/repodata/repomd.xml: HTTP 404 (the upstream's checker reads it)",
            "IPv4 127.0.0.2: http://empty.mm.example.net/epel/.mirror-trace/empty.mm.example.net: HTTP 404: no complete sync of epel yet",
            "IPv4 127.0.0.2: the rsync daemon does not offer the module \"epel\" (offers: other)",
        ]
    );
    let stale: Vec<&str> = problems["stale epel"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(
        stale,
        [
            "IPv4 127.0.0.3: http://stale.mm.example.net/epel/9/Everything/x86_64/repodata/repomd.xml is not repository metadata (altered in transit?)",
            "IPv4 127.0.0.3: http://stale.mm.example.net/epel/10/Everything/x86_64/repodata/repomd.xml is not repository metadata (altered in transit?)",
            "IPv4 127.0.0.3: last sync finished 48 h ago, more than the 24 h the project allows",
        ]
    );
    let readme = std::fs::read_to_string(out.join("epel/README.md")).unwrap();
    assert!(
        readme.contains("**NOT READY**") && readme.contains("| `empty.mm.example.net` | epel | not ready: IPv4 127.0.0.2: http://empty"),
        "{readme}"
    );
    let index = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(index.contains("| **not ready** |"), "{index}");

    // A node whose IPv6 does not answer is not ready, even though IPv4 serves everything.
    let o = export(
        &path,
        &out,
        &[
            "--check",
            "--http-port",
            &hp_s,
            "--rsync-port",
            &rp_s,
            "--timeout",
            "2",
            "--connect",
            "full=127.0.0.1",
            "--connect",
            "full=::1",
            "--node",
            "full",
        ],
    );
    assert_eq!(o.code, 5, "{}", o.stdout);
    assert!(
        o.stdout.contains(&format!("full epel: IPv6 ::1: HTTP port {hp} unreachable")) && !o.stdout.contains("IPv4 127.0.0.1"),
        "{}",
        o.stdout
    );
}

#[test]
fn preflight_verifies_https_certificates_for_the_node_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // One certificate, for good.mm.example.net only: the node "bad" serves it too.
    let (cert, key) = (root.join("cert.pem"), root.join("key.pem"));
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=good.mm.example.net", "-addext", "subjectAltName=DNS:good.mm.example.net", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    for name in ["good", "bad"] {
        epel_tree(&root.join(name), &format!("{name}.mm.example.net"), 60, REPOMD);
    }
    let lo = Loopback::start(root, &[("good", "127.0.0.1", true), ("bad", "127.0.0.2", true)], Some((&cert, &key)));
    let (_d, path, out) = with_fleet(&preflight_fleet(&["good", "bad"], true));
    let ports = [lo.http.to_string(), lo.https.to_string(), lo.rsync.to_string()];
    let args = [
        "--check",
        "--http-port",
        &ports[0],
        "--https-port",
        &ports[1],
        "--rsync-port",
        &ports[2],
        "--timeout",
        "5",
        "--connect",
        "good=127.0.0.1",
        "--connect",
        "bad=127.0.0.2",
        "--json",
    ];
    let mut with_ca = args.to_vec();
    with_ca.extend(["--cacert", cert.to_str().unwrap()]);
    let o = export(&path, &out, &with_ca);
    assert_eq!(o.code, 5, "{}{}", o.stdout, o.stderr);
    let apps: Value = serde_json::from_str(&o.stdout).unwrap();
    assert!(apps[0]["problems"].get("good epel").is_none(), "{}", apps[0]["problems"]);
    let bad = apps[0]["problems"]["bad epel"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{bad:?}");
    let bad = bad[0].as_str().unwrap();
    assert_eq!(bad, "IPv4 127.0.0.2: HTTPS: the certificate does not verify for bad.mm.example.net: 62 (hostname mismatch)");
    // Without the CA the self-signed certificate is not trusted: good is not ready either.
    let o = export(&path, &out, &args);
    let apps: Value = serde_json::from_str(&o.stdout).unwrap();
    let good = apps[0]["problems"]["good epel"][0].as_str().unwrap();
    assert_eq!(good, "IPv4 127.0.0.1: HTTPS: the certificate does not verify for good.mm.example.net: 18 (self-signed certificate)");
}
