//! The install stick's contract: the header `mmbuild` puts in front of the node's image on the
//! stick's MMINSTALL partition, which `mm-install` reads before it writes anything.

use serde::{Deserialize, Serialize};

use crate::DiskRule;

/// GPT partition name of the stick's payload partition (header, then the node's disk.img).
pub const INSTALL_LABEL: &str = "MMINSTALL";
/// The header is TOML text padded with NULs to this size, at the start of MMINSTALL.
pub const HEADER_BYTES: usize = 64 * 1024;
/// Where the node's disk.img starts inside MMINSTALL.
pub const PAYLOAD_OFFSET: u64 = 1 << 20;
/// On the stick's kernel command line: the initramfs runs mm-install instead of booting a root.
pub const INSTALL_FLAG: &str = "mm.install";
pub const INSTALL_SCHEMA: u32 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("the install header is not UTF-8 text: {0}")]
    NotText(String),
    #[error("the install header does not parse: {0}")]
    Syntax(String),
    #[error("install header schema {found}, this installer reads {INSTALL_SCHEMA}: write the stick again with the same mmbuild that built the image")]
    Schema { found: u32 },
    #[error("the install header is {0} bytes, more than the {HEADER_BYTES} reserved for it")]
    TooLarge(usize),
}

/// What the installer must know about the image it carries and the node it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallManifest {
    pub schema: u32,
    pub fleet: String,
    pub node: String,
    pub fqdn: String,
    /// SHA-256 of the whole disk.img, the value in the build's SHA256SUMS.
    pub image_sha256: String,
    pub image_bytes: u64,
    /// GPT disk GUID of the node's image: a disk carrying it holds this node's earlier install.
    pub disk_guid: String,
    /// The image's partitions, in disk order; the installer writes from the first one's start to
    /// the last one's end and nothing after it (where a kept MMDATA may begin).
    pub partitions: Vec<InstallPartition>,
    /// The hardware model's boot-disk rule: where the image goes.
    pub boot_disk: DiskRule,
    /// Serials the operator allowed to be overwritten although they hold foreign data.
    #[serde(default)]
    pub wipe_disk_serials: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallPartition {
    pub number: u32,
    pub name: String,
    pub type_guid: String,
    pub guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
}

impl InstallManifest {
    /// The header block: the TOML text, NUL padded to [`HEADER_BYTES`].
    pub fn to_header(&self) -> Result<Vec<u8>, HeaderError> {
        let text = toml::to_string(self).map_err(|e| HeaderError::Syntax(e.to_string()))?;
        if text.len() >= HEADER_BYTES {
            return Err(HeaderError::TooLarge(text.len()));
        }
        let mut block = text.into_bytes();
        block.resize(HEADER_BYTES, 0);
        Ok(block)
    }

    pub fn from_header(block: &[u8]) -> Result<Self, HeaderError> {
        let end = block.iter().position(|&b| b == 0).unwrap_or(block.len());
        let text = std::str::from_utf8(&block[..end]).map_err(|e| HeaderError::NotText(e.to_string()))?;
        #[derive(Deserialize)]
        struct Schema {
            schema: u32,
        }
        let schema: Schema = toml::from_str(text).map_err(|e| HeaderError::Syntax(e.message().to_string()))?;
        if schema.schema != INSTALL_SCHEMA {
            return Err(HeaderError::Schema { found: schema.schema });
        }
        toml::from_str(text).map_err(|e| HeaderError::Syntax(e.message().to_string()))
    }

    /// Byte range of the image the installer writes: its partitions, not the GPT around them.
    pub fn write_range(&self) -> (u64, u64) {
        let first = self.partitions.iter().map(|p| p.first_lba).min().unwrap_or(0);
        let last = self.partitions.iter().map(|p| p.last_lba + 1).max().unwrap_or(0);
        (first * 512, last * 512)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InstallManifest {
        InstallManifest {
            schema: INSTALL_SCHEMA,
            fleet: "example".into(),
            node: "sonic".into(),
            fqdn: "sonic.mm.example.net".into(),
            image_sha256: "ab".repeat(32),
            image_bytes: 3 << 30,
            disk_guid: "3f0b2c1e-0000-4000-8000-000000000001".into(),
            partitions: vec![
                InstallPartition {
                    number: 1,
                    name: "ESP".into(),
                    type_guid: "t".into(),
                    guid: "g1".into(),
                    first_lba: 2048,
                    last_lba: 4095,
                },
                InstallPartition {
                    number: 3,
                    name: "mmroot".into(),
                    type_guid: "t".into(),
                    guid: "g3".into(),
                    first_lba: 4096,
                    last_lba: 8191,
                },
            ],
            boot_disk: DiskRule { bus: Some(crate::Bus::Nvme), min_size_gb: Some(1000), ..Default::default() },
            wipe_disk_serials: vec!["S1".into()],
        }
    }

    #[test]
    fn header_round_trips_and_is_padded() {
        let m = sample();
        let block = m.to_header().unwrap();
        assert_eq!(block.len(), HEADER_BYTES);
        assert_eq!(InstallManifest::from_header(&block).unwrap(), m);
        assert_eq!(m.write_range(), (2048 * 512, 8192 * 512));
    }

    #[test]
    fn foreign_or_future_headers_are_clear_errors() {
        assert!(matches!(InstallManifest::from_header(&[0xff, 0xfe, 0]), Err(HeaderError::NotText(_))));
        assert!(matches!(InstallManifest::from_header(b"\0\0"), Err(HeaderError::Syntax(_))));
        let future = String::from_utf8(sample().to_header().unwrap()).unwrap().replace("schema = 1", "schema = 9");
        assert_eq!(InstallManifest::from_header(future.as_bytes()), Err(HeaderError::Schema { found: 9 }));
        let mut big = sample();
        big.wipe_disk_serials = vec!["x".repeat(HEADER_BYTES)];
        assert!(matches!(big.to_header(), Err(HeaderError::TooLarge(_))));
    }
}
