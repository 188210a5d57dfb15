//! `HOST[:PORT]` as URLs and `--connect` spell it: IPv6 literals in brackets (a bare one without a port is taken too), names, IPv4.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// The host part of an authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name (lower-cased), resolved when connecting.
    Name(String),
}

/// A parsed `HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub host: Host,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not HOST[:PORT] (an IPv6 address in brackets when a port follows: [2001:db8::1]:8080): {why}")]
pub struct AuthorityError {
    pub input: String,
    pub why: String,
}

impl Authority {
    pub fn parse(s: &str) -> Result<Authority, AuthorityError> {
        let bad = |why: &str| AuthorityError { input: s.to_string(), why: why.to_string() };
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control() || "/?#@".contains(c)) {
            return Err(bad("white space, a control character or one of / ? # @ in it: neither a DNS name nor an IP address"));
        }
        let port = |p: &str| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad(&format!("bad port {p:?}: not a number from 1 to 65535"))),
            Ok(n) => Ok(n),
        };
        if let Some(rest) = s.strip_prefix('[') {
            let (addr, after) = rest.split_once(']').ok_or_else(|| bad("`[` without `]`"))?;
            let ip: Ipv6Addr = addr.parse().map_err(|_| bad(&format!("{addr:?} in brackets is not an IPv6 address")))?;
            let port = match after {
                "" => None,
                _ => Some(port(after.strip_prefix(':').ok_or_else(|| bad(&format!("{after:?} after `]` is not :PORT")))?)?),
            };
            return Ok(Authority { host: Host::Ip(IpAddr::V6(ip)), port });
        }
        if let Ok(ip) = s.parse::<Ipv6Addr>() {
            return Ok(Authority { host: Host::Ip(IpAddr::V6(ip)), port: None });
        }
        let (host, port) = match s.split_once(':') {
            Some((_, p)) if p.contains(':') => return Err(bad("more than one `:` outside brackets, and not an IPv6 address")),
            Some((h, p)) => (h, Some(port(p)?)),
            None => (s, None),
        };
        if host.is_empty() {
            return Err(bad("no host before the port"));
        }
        if host.contains(['[', ']']) {
            return Err(bad("a bracket around something that is not an IPv6 address"));
        }
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(host.to_ascii_lowercase()),
        };
        Ok(Authority { host, port })
    }

    /// The host as a URL or a `Host:` header writes it: IPv6 in brackets.
    pub fn host_text(&self) -> String {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            Host::Ip(ip) => ip.to_string(),
            Host::Name(n) => n.clone(),
        }
    }

    /// The host as a command line takes it (ssh, a socket address): no brackets.
    pub fn host_bare(&self) -> String {
        match &self.host {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(n) => n.clone(),
        }
    }

    /// The whole authority, as HTTP's `Host:` header carries it (RFC 9110 7.2).
    pub fn host_header(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host_text()),
            None => self.host_text(),
        }
    }

    /// Every address to connect to, `default_port` when the authority names none.
    pub fn socket_addrs(&self, default_port: u16) -> std::io::Result<Vec<SocketAddr>> {
        let port = self.port.unwrap_or(default_port);
        match &self.host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
            Host::Name(n) => Ok((n.as_str(), port).to_socket_addrs()?.collect()),
        }
    }
}

impl std::fmt::Display for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.host_header())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_ports_and_ipv6_literals() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        for (input, host, port, header) in [
            ("[2001:db8::1]", Host::Ip(v6), None, "[2001:db8::1]"),
            ("[2001:db8::1]:8080", Host::Ip(v6), Some(8080), "[2001:db8::1]:8080"),
            ("2001:db8::1", Host::Ip(v6), None, "[2001:db8::1]"),
            ("[::1]:873", Host::Ip("::1".parse().unwrap()), Some(873), "[::1]:873"),
            ("192.0.2.1", Host::Ip("192.0.2.1".parse().unwrap()), None, "192.0.2.1"),
            ("192.0.2.1:2222", Host::Ip("192.0.2.1".parse().unwrap()), Some(2222), "192.0.2.1:2222"),
            ("mirror.example", Host::Name("mirror.example".into()), None, "mirror.example"),
            ("Mirror.Example:8080", Host::Name("mirror.example".into()), Some(8080), "mirror.example:8080"),
        ] {
            let a = Authority::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((&a.host, a.port, a.host_header().as_str()), (&host, port, header), "{input}");
        }
        let a = Authority::parse("[2001:db8::1]:8080").unwrap();
        assert_eq!((a.host_bare().as_str(), a.socket_addrs(80).unwrap()[0].to_string().as_str()), ("2001:db8::1", "[2001:db8::1]:8080"));
        assert_eq!(Authority::parse("[2001:db8::1]").unwrap().socket_addrs(80).unwrap()[0].to_string(), "[2001:db8::1]:80");
    }

    #[test]
    fn bad_input_says_why() {
        for (input, why) in [
            ("", "empty"),
            ("[2001:db8::1", "`[` without `]`"),
            ("[2001:db8::1]8080", "after `]` is not :PORT"),
            ("[2001:db8::1]:", "bad port \"\""),
            ("[mirror.example]:80", "is not an IPv6 address"),
            ("mirror.example:", "bad port \"\""),
            ("mirror.example:http", "bad port \"http\""),
            ("mirror.example:0", "bad port \"0\""),
            ("mirror.example:65536", "bad port \"65536\""),
            (":80", "no host before the port"),
            ("2001:db8::1:8080:x", "more than one `:`"),
            ("a b", "white space"),
            ("user@host", "one of / ? # @"),
            ("host/path", "one of / ? # @"),
            ("host]:80", "a bracket"),
        ] {
            let e = Authority::parse(input).expect_err(input).to_string();
            assert!(e.contains(why), "{input}: {e}");
            assert!(e.contains("[2001:db8::1]:8080"), "the error shows the form: {e}");
        }
    }
}
