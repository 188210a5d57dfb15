//! The console's upstream probe against a real rsync daemon on loopback (IPv4 and IPv6), a
//! closed port, a socket that never greets, and a service speaking another protocol.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hostkit::testenv::free_port;
use mm_firstboot::upstream::{probe, Family, Reach};

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rsyncd(dir: &std::path::Path, addr: &str) -> (Daemon, u16) {
    let port = free_port(addr);
    let conf = dir.join(format!("rsyncd-{port}.conf"));
    std::fs::write(&conf, format!("use chroot = no\nuid = root\ngid = root\n[epel]\n    path = {}\n", dir.display())).unwrap();
    let daemon = Daemon(
        Command::new("rsync")
            .args([
                "--daemon",
                "--no-detach",
                &format!("--config={}", conf.display()),
                &format!("--port={port}"),
                &format!("--address={addr}"),
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let target = if addr.contains(':') { format!("[{addr}]:{port}") } else { format!("{addr}:{port}") };
    for _ in 0..200 {
        if std::net::TcpStream::connect(&target).is_ok() {
            return (daemon, port);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("rsync daemon on {target} did not start");
}

const T: Duration = Duration::from_secs(1);

#[test]
fn rsync_daemon_answers_per_family() {
    let dir = tempfile::tempdir().unwrap();
    let (_d4, p4) = rsyncd(dir.path(), "127.0.0.1");
    let (_d6, p6) = rsyncd(dir.path(), "::1");
    assert_eq!(probe(&format!("rsync://127.0.0.1:{p4}/epel/"), Family::IPv4, T), Reach::Answers);
    assert_eq!(probe(&format!("rsync://127.0.0.1:{p4}/epel/"), Family::IPv6, T), Reach::NoAddress);
    assert_eq!(probe(&format!("rsync://[::1]:{p6}/epel/"), Family::IPv6, T), Reach::Answers);
    assert_eq!(probe(&format!("rsync://[::1]:{p6}/epel/"), Family::IPv4, T), Reach::NoAddress);
}

#[test]
fn closed_silent_and_foreign_ports_fail_with_the_reason() {
    let closed = free_port("127.0.0.1");
    match probe(&format!("rsync://127.0.0.1:{closed}/epel/"), Family::IPv4, T) {
        Reach::Fails(e) => assert!(e.contains("refused"), "{e}"),
        r => panic!("{r:?}"),
    }
    // Accepts (the kernel completes the handshake) and never says a word: a filtering middlebox.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("rsync://127.0.0.1:{}/epel/", silent.local_addr().unwrap().port());
    let t0 = Instant::now();
    match probe(&url, Family::IPv4, T) {
        Reach::Fails(e) => assert!(e.contains("no greeting within 1s"), "{e}"),
        r => panic!("{r:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "bounded by the timeout");
    // Something else answers on the port (a transparent proxy, ssh).
    let foreign = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = foreign.local_addr().unwrap().port();
    let th = std::thread::spawn(move || {
        let (mut s, _) = foreign.accept().unwrap();
        s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
    });
    match probe(&format!("rsync://127.0.0.1:{port}/epel/"), Family::IPv4, T) {
        Reach::Fails(e) => assert!(e.contains("unexpected answer \"SSH-2.0"), "{e}"),
        r => panic!("{r:?}"),
    }
    th.join().unwrap();
    match probe("rsync://no-such-host.invalid/epel/", Family::IPv4, T) {
        Reach::Unresolved(_) => {}
        r => panic!("{r:?}"),
    }
}
