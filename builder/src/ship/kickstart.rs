//! AlmaLinux 9 kickstart (`ks.cfg`) per node, rendered from the templates in `overlays/kickstart/`.
//!
//! Everything from the fleet reaches the kickstart through a helper named after the syntax it
//! lands in: `ks_quote` (a kickstart double-quoted string), `ks_word` (a bare kickstart word, or
//! quoted when it is not plainly safe), `ks_comment` (one comment line), `sh_quote` (a shell
//! single-quoted word) and `sh_glob` (a shell pattern where only `*` and `?` are special).
//! HTML escaping is off and strict mode is on, so a misspelt variable is an error, not a blank.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use handlebars::{handlebars_helper, Handlebars};
use mmconfig::{DataPlacement, DiskRule, NodeConfig};
use serde_json::{json, Value};

/// The main template; every other `*.hbs` in the directory is a partial named by its file name
/// without `.hbs` (`pre-disk.sh.hbs` is `{{> pre-disk.sh}}`).
pub const MAIN_TEMPLATE: &str = "ks.cfg.hbs";

/// The unit files the kickstart installs from the OEMDRV stick (from `overlays/rootfs`).
pub const UNITS: [&str; 2] = ["mm-firstboot.service", "mm-firstboot-status.service"];

/// Where the kickstart templates live in a data directory.
pub fn templates_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("overlays/kickstart")
}

/// Characters that end a kickstart or shell line somewhere: ASCII/C1 controls and the Unicode
/// line separators Python's `splitlines` (pykickstart's reader) also breaks on.
fn breaks_line(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

fn one_line(s: &str) -> String {
    s.chars().map(|c| if breaks_line(c) { ' ' } else { c }).collect()
}

/// A kickstart double-quoted string (pykickstart splits lines with POSIX shlex: inside double
/// quotes only `\` and `"` are special). Line breaks become spaces.
pub fn ks_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in one_line(s).chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A bare kickstart word when it only holds characters that mean nothing to shlex
/// (addresses, host names, option lists), else [`ks_quote`]d.
pub fn ks_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || ".:/,=_+@-%".contains(c)) {
        s.to_string()
    } else {
        ks_quote(s)
    }
}

/// Text for the rest of a `#` comment line: it cannot start a new line.
pub fn ks_comment(s: &str) -> String {
    one_line(s)
}

/// A shell single-quoted word (`'` becomes `'\''`). Line breaks become spaces, because inside a
/// kickstart section a line reading `%end` would end the script whatever the shell thinks.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", one_line(s).replace('\'', r"'\''"))
}

/// A shell pattern in which only `*` and `?` are special (mmconfig's glob), single-quoted for
/// assignment; used unquoted on the right of `[[ x == $pat ]]`.
pub fn sh_glob(s: &str) -> String {
    let mut escaped = String::with_capacity(s.len());
    for c in s.chars() {
        if "[]\\".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    sh_quote(&escaped)
}

handlebars_helper!(ks_quote_h: |s: str| ks_quote(s));
handlebars_helper!(ks_word_h: |s: str| ks_word(s));
handlebars_helper!(ks_comment_h: |s: str| ks_comment(s));
handlebars_helper!(sh_quote_h: |v: Json| sh_quote(&json_text(v)));
handlebars_helper!(sh_glob_h: |s: str| sh_glob(s));

/// Strings as they are, numbers as digits, null as empty (an unset rule field).
fn json_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn registry(templates: &Path) -> Result<Handlebars<'static>> {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    h.register_escape_fn(handlebars::no_escape);
    h.register_helper("ks_quote", Box::new(ks_quote_h));
    h.register_helper("ks_word", Box::new(ks_word_h));
    h.register_helper("ks_comment", Box::new(ks_comment_h));
    h.register_helper("sh_quote", Box::new(sh_quote_h));
    h.register_helper("sh_glob", Box::new(sh_glob_h));
    let mut entries: Vec<PathBuf> = std::fs::read_dir(templates)
        .with_context(|| format!("reading the kickstart templates in {}", templates.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hbs"))
        .collect();
    entries.sort();
    for path in entries {
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let name = if file == MAIN_TEMPLATE { "ks" } else { file.trim_end_matches(".hbs") };
        h.register_template_string(name, text).with_context(|| format!("parsing template {}", path.display()))?;
    }
    anyhow::ensure!(h.has_template("ks"), "{}: missing {MAIN_TEMPLATE}", templates.display());
    Ok(h)
}

/// Dotted netmask of an IPv4 prefix length.
pub fn netmask(prefix_len: u8) -> String {
    let bits = if prefix_len == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix_len.min(32))) };
    std::net::Ipv4Addr::from(bits).to_string()
}

fn rule_ctx(rule: &DiskRule) -> Value {
    json!({
        "bus": rule.bus.map(|b| b.as_str()),
        "model": rule.model.clone().unwrap_or_default(),
        "serial": rule.serial,
        "path": rule.path.clone().unwrap_or_default(),
        "min_gb": rule.min_size_gb,
        "max_gb": rule.max_size_gb,
        "text": rule.describe(),
    })
}

/// The template context: the node configuration, reshaped for kickstart syntax.
fn context(cfg: &NodeConfig) -> Result<Value> {
    let node = &cfg.node;
    let ipv4 = match &node.ipv4 {
        Some(v4) => {
            let net: ipnet::Ipv4Net = v4.address.parse().with_context(|| format!("ipv4.address {}", v4.address))?;
            json!({ "ip": net.addr().to_string(), "netmask": netmask(net.prefix_len()), "gateway": v4.gateway })
        }
        None => Value::Null,
    };
    let ipv6 = node.ipv6.as_ref().map_or(Value::Null, |v6| json!({ "address": v6.address, "gateway": v6.gateway }));
    let bond = match &cfg.hardware.network.bond {
        Some(b) => json!({
            "name": b.name,
            "opts": format!("mode={},xmit_hash_policy={},lacp_rate={},miimon={}", b.mode, b.xmit_hash_policy, b.lacp_rate, b.miimon_ms),
        }),
        None => json!({ "name": "", "opts": "" }),
    };
    let (data_on, data_rule) = match &cfg.hardware.storage.data {
        DataPlacement::BootDisk => ("boot-disk", Value::Null),
        DataPlacement::Disk { rule } => ("disk", rule_ctx(rule)),
    };
    let consoles: Vec<String> = cfg.hardware.consoles.iter().map(|c| format!("console={c}")).collect();
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "fleet_name": cfg.fleet.name,
        "fqdn": node.fqdn,
        "sponsor_name": node.sponsor.name,
        "admin_user": mmconfig::ADMIN_USER,
        "admin_keys": cfg.fleet.admin_ssh_keys,
        "kernel_append": consoles.join(" "),
        "hardware_name": cfg.hardware.name,
        "boot_rule": rule_ctx(&cfg.hardware.storage.boot_disk),
        "data_on": data_on,
        "data_rule": data_rule,
        "wipe_serials": node.wipe_disk_serials,
        "data_label": mmconfig::DATA_LABEL,
        "data_mount": mmconfig::DATA_MOUNT,
        "data_mount_regex": format!("{}(/.*)?", mmconfig::DATA_MOUNT),
        "nic": {
            "drivers": cfg.hardware.network.nic.drivers,
            "name": cfg.hardware.network.nic.name.clone().unwrap_or_default(),
            "count": cfg.hardware.network.nic.count,
        },
        "mac": node.interface_mac.clone().unwrap_or_default(),
        "bond": bond,
        "ipv4": ipv4,
        "ipv6": ipv6,
        "dns": node.dns.join(","),
        "binaries": crate::image::base::NODE_BINARIES,
        "units": UNITS,
        "node_config_file": mmconfig::NODE_CONFIG_FILE,
        "installed_config": mmconfig::INSTALLED_CONFIG,
        "host_key_file": mmconfig::HOST_KEY_FILE,
        "host_key_pub_file": mmconfig::HOST_KEY_PUB_FILE,
        "installed_host_key": mmconfig::INSTALLED_HOST_KEY,
    }))
}

/// Render the complete kickstart for one node from the templates in `templates`.
pub fn render_kickstart(cfg: &NodeConfig, templates: &Path) -> Result<String> {
    let h = registry(templates)?;
    let ctx = context(cfg)?;
    h.render("ks", &ctx).with_context(|| format!("rendering the kickstart for node {} from {}", cfg.node.name, templates.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const HOSTILE: &[&str] =
        &["\"; rm -rf / #", "O'Brien & <Sons>", "$(reboot)", "`reboot`", "a\nb", "x\r\n%end\nreboot", "back\\slash\"", "u\u{2028}v"];

    fn bash_echo(word: &str) -> String {
        let out = Command::new("bash").args(["-c", &format!("printf %s {word}")]).output().unwrap();
        assert!(out.status.success(), "{word}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn sh_quote_is_one_literal_word() {
        for s in HOSTILE {
            let q = sh_quote(s);
            assert!(!q.contains('\n') && !q.contains('\r'), "{q}");
            assert_eq!(bash_echo(&q), one_line(s), "{s:?}");
        }
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn sh_glob_keeps_only_star_and_question_mark() {
        let test = |pat: &str, text: &str| {
            let script = format!("p={}; [[ {} == $p ]]", sh_glob(pat), sh_quote(text));
            Command::new("bash").args(["-c", &script]).status().unwrap().success()
        };
        assert!(test("Samsung*", "Samsung SSD 970"));
        assert!(test("ST?000*", "ST8000NM"));
        assert!(!test("[ab]x", "ax"));
        assert!(test("[ab]x", "[ab]x"));
        assert!(test("a\\*", "a\\zz"));
        assert!(!test("$(reboot)", "x"));
    }

    #[test]
    fn ks_quote_survives_shlex() {
        // pykickstart splits every command line with POSIX shlex.
        for s in HOSTILE {
            let line = format!("sshkey --username=x {}", ks_quote(s));
            let out = Command::new("python3")
                .args(["-c", "import shlex,sys; a=shlex.split(sys.argv[1]); assert len(a)==3, a; sys.stdout.write(a[2])", &line])
                .output()
                .unwrap();
            assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8(out.stdout).unwrap(), one_line(s));
        }
    }

    #[test]
    fn ks_word_is_bare_only_when_plain() {
        assert_eq!(ks_word("192.0.2.10"), "192.0.2.10");
        assert_eq!(ks_word("2001:db8::2/64"), "2001:db8::2/64");
        assert_eq!(ks_word("mode=802.3ad,miimon=100"), "mode=802.3ad,miimon=100");
        assert_eq!(ks_word("a b"), "\"a b\"");
        assert_eq!(ks_word("x#y"), "\"x#y\"");
        assert_eq!(ks_word(""), "\"\"");
        assert_eq!(ks_comment("a\nb\u{2029}c"), "a b c");
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask(31), "255.255.255.254");
        assert_eq!(netmask(29), "255.255.255.248");
        assert_eq!(netmask(24), "255.255.255.0");
        assert_eq!(netmask(32), "255.255.255.255");
        assert_eq!(netmask(0), "0.0.0.0");
    }
}
