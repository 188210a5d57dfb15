//! `mm-sync`: keep one hosted project in step with its upstream.

use std::process::ExitCode;

use clap::Parser;
use mm_sync::cli::Cli;
use mm_sync::{overview, Env, Exit, Overrides};
use mmconfig::NodeConfig;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match NodeConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mm-sync: error: {e}");
            return Exit::BadConfig.into();
        }
    };
    let env = Env { root: cli.root.clone(), rsync: cli.rsync.clone(), keep_log_days: cli.keep_logs };
    if cli.status {
        let o = mm_sync::gather_overview(&env, &cfg);
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&o).unwrap_or_default());
        } else {
            print!("{}", overview::render_overview(&o));
        }
        return if o.warnings.is_empty() { Exit::Ok } else { Exit::NoSpace }.into();
    }
    if cli.traffic {
        let files = mm_sync::traffic::Files::new(&env);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        return match mm_sync::traffic::collect(&cfg, &files, now) {
            Ok(s) => {
                for lost in &s.lost {
                    eprintln!(
                        "mm-sync: warning: {} was rotated away before its last lines were read (keep delaycompress in logrotate)",
                        lost.display()
                    );
                }
                eprintln!("mm-sync: traffic: {} nginx and {} rsyncd line(s) read", s.nginx_lines, s.rsyncd_lines);
                Exit::Ok.into()
            }
            Err(e) => {
                eprintln!("mm-sync: error: traffic: {e:#}");
                let denied =
                    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied));
                if denied { Exit::NotPermitted } else { Exit::SyncFailed }.into()
            }
        };
    }
    let Some(name) = cli.project.as_deref() else {
        eprintln!("mm-sync: error: name a project (hosted here: {}), or use --status or --traffic", names(&cfg));
        return Exit::Usage.into();
    };
    let Some(p) = cfg.project(name) else {
        eprintln!("mm-sync: error: {} does not host {name:?} (hosted here: {})", cfg.node.fqdn, names(&cfg));
        return Exit::BadConfig.into();
    };
    if cli.check {
        return match mm_sync::check_project(&env, p, cli.deep) {
            Ok(r) => {
                if cli.json {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                } else {
                    for e in &r.errors {
                        println!("{name}: PROBLEM: {e}");
                    }
                    println!("{name}: {} index(es), {} file(s) checked, {} problem(s)", r.indexes, r.files_checked, r.errors.len());
                }
                if r.ok() { Exit::Ok } else { Exit::Inconsistent }.into()
            }
            Err(e) => {
                eprintln!("mm-sync: error: {e:#}");
                Exit::SyncFailed.into()
            }
        };
    }
    let ov = Overrides { bwlimit_kbps: cli.bwlimit, timeout_seconds: cli.timeout, deep_check: cli.deep };
    let mut say = |m: &str| eprintln!("mm-sync: {m}");
    match mm_sync::sync_project(&env, &cfg, p, &ov, &mut say) {
        Ok((code, st)) => {
            if let Some(st) = st {
                eprintln!("mm-sync: {name}: {} in {:.1} s: {}", st.result, st.seconds, st.message);
            }
            code.into()
        }
        Err(e) => {
            eprintln!("mm-sync: error: {name}: {e:#}");
            Exit::SyncFailed.into()
        }
    }
}

fn names(cfg: &NodeConfig) -> String {
    cfg.projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
}
