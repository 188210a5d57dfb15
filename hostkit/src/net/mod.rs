//! The one network layer: deadline-bound connections, HTTP/1.0 HEAD/GET, the rsync greeting and module list, TLS certificates, and URL authorities.
//!
//! Deliberately small: one connection per probe, no redirects, no keep-alive, bounded reads, so
//! a peer that accepts and never answers costs exactly one timeout.

mod authority;
mod conn;
mod http;
mod rsync;
pub mod tls;

pub use authority::{Authority, AuthorityError, Host};
pub use conn::{greeting, Conn, NetError};
pub use http::{http, HttpResponse};
pub use rsync::{parse_module_lines, rsync_list, RsyncListing};
