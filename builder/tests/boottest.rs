//! Slow tier: `mmbuild boot-test` boots example nodes of three hardware shapes from their real,
//! unmodified images (QEMU + OVMF, TCG here) and judges them; one boot per node serves every check.

mod common;

use std::process::Command;

use common::{mmbuild, repo, text};
use hostkit::testenv::Need;

#[test]
#[ignore = "slow: builds images and boots three example nodes under QEMU + OVMF"]
fn example_nodes_boot_and_serve_in_their_hardware_shapes() {
    if hostkit::testenv::need(&[Need::Root, Need::Tool("mmdebstrap"), Need::Tool("qemu-system-x86_64"), Need::Tool("dnsmasq")]).is_err() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fleet = repo().join("examples/fleet.toml");
    let (fleet, out, state, data) = (fleet.to_str().unwrap(), tmp.path().join("out"), tmp.path().join("state"), repo());
    let (out_s, state_s, data_s) = (out.to_str().unwrap(), state.to_str().unwrap(), data.to_str().unwrap());
    // qemu: virtio disks, a separate data disk. wasp (ziply): SATA, data in the boot disk's free
    // space, a /31, an r8169 stood in for. termite (hurricane): SATA boot + a 4 TB-class SATA data
    // disk, two bonded ports, ixgbe stood in for, an IPv6 link-local gateway.
    let nodes = ["ci", "ziply", "hurricane"];
    let mut build = vec!["build", fleet, "--out", out_s, "--quiet", "--state", state_s, "--data", data_s];
    nodes.iter().for_each(|n| build.extend(["--node", n]));
    let o = mmbuild(&build);
    assert!(o.status.success(), "{}", text(&o));

    // A node that was not built is a clear error before anything boots.
    let o = mmbuild(&["boot-test", fleet, "--out", out_s, "--data", data_s, "--node", "sonic"]);
    assert!(!o.status.success() && text(&o).contains("no image for node sonic"), "{}", text(&o));

    let junit = tmp.path().join("junit.xml");
    let mut run = vec!["boot-test", fleet, "--out", out_s, "--data", data_s, "--foreign-disk", "--junit", junit.to_str().unwrap()];
    nodes.iter().for_each(|n| run.extend(["--node", n]));
    let started = std::time::Instant::now();
    let o = mmbuild(&run);
    let report = text(&o);
    eprintln!("{report}\nboot-test of {} nodes: {:.0} s", nodes.len(), started.elapsed().as_secs_f64());
    assert!(o.status.success(), "{report}");
    assert!(report.contains("3 of 3 node(s) passed"), "{report}");
    for n in nodes {
        assert!(report.lines().any(|l| l.starts_with(n) && l.contains("passed") && l.contains("ALL GOOD")), "{n}:\n{report}");
    }
    assert!(report.contains("ziply: note: QEMU has no r8169 NIC: e1000e stands in"), "{report}");
    assert!(report.contains("hurricane: note: QEMU has no ixgbe NIC: igb stands in"), "{report}");
    // Nothing of a passed node stays behind; the shipped images are unchanged (not even their size).
    for n in nodes {
        assert!(!out.join(n).join("boot-test").exists(), "{n}");
    }
    let sums = Command::new("sha256sum").args(["-c", "SHA256SUMS"]).current_dir(&out).output().unwrap();
    assert!(sums.status.success(), "{}", text(&sums));

    // JUnit: well-formed, every check a testcase, no failure.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let lint = Command::new("xmllint").arg("--noout").arg(&junit).output().unwrap();
    assert!(lint.status.success(), "{}\n{xml}", text(&lint));
    assert!(xml.contains(r#"failures="0""#) && !xml.contains("<failure"), "{xml}");
    for check in [
        "console verdict ALL GOOD",
        "http IPv4 /epel/",
        "http IPv6 /epel/",
        "rsync IPv6 modules",
        "first sync debian",
        "ssh host key",
        "data disk layout",
        "bond0 ports on the console",
    ] {
        assert!(xml.contains(&format!("name=\"{check}\"")), "{check}:\n{xml}");
    }
}
