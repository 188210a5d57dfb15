//! `mmbuild`: validates a fleet inventory and builds per-node images and install media.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use hostkit::cmd as hostcmd;
use mmbuild::cli::{AnsibleArgs, Cli, Command, Day2Args, ExportKind, RegistrationsArgs};
use mmbuild::exit::{self, Exit, Invalid};
use mmbuild::image::build::{self, BuildOptions, Outcome};
use mmbuild::inventory::{check, fleet};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { fleet, json, node_toml } => check::run(&fleet, cli.data.as_deref(), json, node_toml.as_deref()),
        Command::Build {
            fleet,
            out,
            nodes,
            format,
            kickstart_only,
            install_stick,
            jobs,
            cache,
            node_bin,
            state,
            new_host_keys,
            pin_packages,
            quiet,
        } => {
            let opts = BuildOptions {
                fleet,
                data: cli.data.clone(),
                out,
                nodes,
                format,
                kickstart_only,
                install_stick,
                jobs: jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
                cache: cache.unwrap_or_else(build::default_cache),
                node_bin: node_bin.unwrap_or_else(build::default_node_bin),
                state,
                new_host_keys,
                pin_packages,
                quiet,
            };
            build::run_build(&opts).and_then(|outcome| match outcome {
                Outcome::Built(_) => Ok(Exit::Ok),
                Outcome::InvalidInput(msg) => Err(Invalid::diagnostics(msg).into()),
            })
        }
        Command::Export { kind: ExportKind::Registrations(args) } => export_registrations(args, cli.data.clone()),
        Command::Export { kind: ExportKind::Ansible(args) } => export_ansible(args, cli.data.clone()),
        Command::Plan(args) => day2(args, cli.data.clone(), false),
        Command::Apply(args) => day2(args, cli.data.clone(), true),
        Command::Write { fleet, out, node, to, artifact, force, dry_run, json } => {
            let data = cli.data.clone();
            mmbuild::ship::write::run(&mmbuild::ship::write::Options { fleet, data, out, node, to, artifact, force, dry_run, json })
        }
        Command::Qemu { image, data_disks, http_port, rsync_port, memory, snapshot } => {
            run_qemu(image, data_disks, http_port, rsync_port, memory, snapshot)
        }
        Command::BootTest { fleet, out, nodes, jobs, junit, keep, foreign_disk, from_stick, timeout, memory, json } => {
            let opts = mmbuild::boottest::Options {
                out,
                nodes,
                jobs,
                timeout: std::time::Duration::from_secs(timeout),
                keep,
                foreign_disk,
                from_stick,
                memory_mib: memory,
            };
            boot_test(&fleet, cli.data.as_deref(), &opts, junit.as_deref(), json)
        }
        Command::Status { fleet, json, probe, out } => {
            mmbuild::monitor::status::run(&fleet, cli.data.as_deref(), json, &probe.nodes, &probe.options(), out.as_deref())
        }
        Command::Report { fleet, out, since, probe } => {
            mmbuild::monitor::report::run(&fleet, cli.data.as_deref(), &out, since, &probe.nodes, &probe.options())
        }
        Command::Export { kind: ExportKind::Prometheus { fleet, out, blackbox, build } } => {
            mmbuild::monitor::prometheus::run(&fleet, cli.data.as_deref(), &out, &blackbox, build.as_deref())
        }
    };
    // The one place outcomes become exit codes.
    match result {
        Ok(exit) => exit.into(),
        Err(err) => {
            if let Some(invalid) = err.downcast_ref::<Invalid>() {
                eprintln!("{invalid}");
                return Exit::InvalidInput.into();
            }
            eprintln!("mmbuild: error: {err:#}");
            if hostcmd::is_environment(&err) { Exit::Environment } else { Exit::BuildFailed }.into()
        }
    }
}

fn day2(args: Day2Args, data: Option<PathBuf>, apply: bool) -> anyhow::Result<Exit> {
    use mmbuild::day2;
    let fleet = fleet::open(&args.fleet, data.as_deref())?;
    let parts = |list: Vec<mmbuild::day2::remote::Connect>| list.into_iter().map(|c| (c.node, c.at.host_bare(), c.at.port)).collect();
    let (connect, connect_new) = (parts(args.connect), parts(args.connect_new));
    let opts = day2::Options {
        out: args.out,
        nodes: args.nodes,
        jobs: args.jobs,
        node_bin: args.node_bin.unwrap_or_else(build::default_node_bin),
        connect,
        connect_new,
        identity: args.identity,
        prune: args.prune,
        confirm_timeout: args.confirm_timeout,
        connect_timeout: args.connect_timeout,
        rollout: day2::Rollout {
            max_reboots: args.max_reboots,
            canary: args.canary,
            keep_going: args.keep_going,
            retry_os: args.retry_os,
            trial_boots: args.trial_boots,
            timeout: args.os_timeout,
        },
    };
    let report = day2::run(&fleet, &opts, apply)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", day2::render(&report, apply));
    }
    Ok(if report.all_ok() { Exit::Ok } else { Exit::NodesFailed })
}

fn export_ansible(args: AnsibleArgs, data: Option<PathBuf>) -> anyhow::Result<Exit> {
    use mmbuild::day2::ansible;
    let fleet = fleet::open(&args.fleet, data.as_deref())?;
    let opts = ansible::Options { out: args.out, nodes: args.nodes, known_hosts: args.known_hosts };
    let s = ansible::export(&fleet, &opts)?;
    let dir = opts.out.display();
    println!("{dir}: {} node(s) in {} group(s), {} file(s) written", s.nodes, s.groups, s.files.len());
    println!("run: ansible-playbook -i {dir}/inventory.yml {dir}/converge.yml   (see {dir}/README.md)");
    Ok(Exit::Ok)
}

fn export_registrations(args: RegistrationsArgs, data: Option<PathBuf>) -> anyhow::Result<Exit> {
    use mmbuild::registration::{self, preflight::Probe, ExportOptions, Selection};
    let mut probe = Probe {
        http_port: args.http_port,
        https_port: args.https_port,
        rsync_port: args.rsync_port,
        cacert: args.cacert,
        timeout: std::time::Duration::from_secs(args.timeout.max(1)),
        ..Probe::default()
    };
    for c in &args.connect {
        if let Some(port) = c.at.port {
            eprintln!(
                "mmbuild: error: --connect {}={}: the probe's ports are --http-port, --https-port and --rsync-port, not :{port}: give NODE=HOST",
                c.node, c.at
            );
            return Ok(Exit::Usage);
        }
        let addrs = c.at.socket_addrs(0).with_context(|| format!("--connect {}={}: resolving {}", c.node, c.at, c.at.host_bare()))?;
        probe.connect.entry(c.node.clone()).or_default().extend(addrs.into_iter().map(|a| a.ip()));
    }
    let opts = ExportOptions {
        fleet: args.fleet,
        data,
        out: args.out,
        selection: Selection { nodes: args.nodes, projects: args.projects },
        check: args.check.then_some(probe),
        json: args.json,
    };
    registration::run(&opts)
}

fn boot_test(
    fleet_path: &std::path::Path,
    data: Option<&std::path::Path>,
    opts: &mmbuild::boottest::Options,
    junit: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<Exit> {
    use anyhow::Context;
    use mmbuild::boottest::{self, report};
    let fleet = fleet::open(fleet_path, data)?;
    if let Some(name) = opts.nodes.iter().find(|n| fleet.node(n).is_none()) {
        return exit::invalid(format!("--node {name}: no such node in {}", fleet_path.display()));
    }
    let results = boottest::run(&fleet, opts)?;
    if let Some(path) = junit {
        let xml = report::junit(&fleet.data_dir.join("overlays/boot-test/junit.xml.hbs"), &fleet.name, &results)?;
        hostkit::atomic::write(path, xml.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        let doc = serde_json::json!({"version": 1, "fleet": fleet.name, "nodes": results});
        println!("{}", serde_json::to_string_pretty(&doc).context("serializing the results")?);
    } else {
        print!("{}", report::table(&results));
    }
    Ok(boottest::exit_status(&results))
}

fn run_qemu(image: PathBuf, data_disks: Vec<String>, http: u16, rsync: u16, memory: u32, snapshot: bool) -> anyhow::Result<Exit> {
    use anyhow::Context;
    use mmbuild::boottest::qemu::{self, Vm, VmOptions};
    let scratch = std::env::temp_dir().join(format!("mmbuild-qemu-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let mut opts = VmOptions::new(image);
    for (i, spec) in data_disks.iter().enumerate() {
        let disk = qemu::data_disk(spec, &scratch, i)?;
        eprintln!("mmbuild: data disk {i}: {}", disk.display());
        opts.data_disks.push(disk);
    }
    opts.forwards = vec![(http, 80), (rsync, 873)];
    opts.memory_mib = memory;
    opts.snapshot = snapshot;
    let vm = Vm::start(&opts)?;
    eprintln!("mmbuild: booting with {:?}; http://127.0.0.1:{http}/ and rsync://127.0.0.1:{rsync}/ once up; Ctrl-A X quits", vm.accel);
    let status = vm.wait()?;
    Ok(if status.success() { Exit::Ok } else { Exit::BuildFailed })
}
