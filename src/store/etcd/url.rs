//! Where a store lives on etcd: its URL, the connection to it, and the key of each entry
//! (`PREFIX/TABLE/KEY`, so one prefix holds one store and several stores can share a cluster).

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use super::errors::unreachable_cluster;
use crate::domain::Result;
use crate::store::tables::Table;

/// Where a store lives on etcd: `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdUrl {
    pub endpoints: Vec<String>,
    /// Without a trailing slash, e.g. `/zsc`.
    pub prefix: String,
}

/// The prefix a URL without one gets.
pub const DEFAULT_PREFIX: &str = "/zsc";

impl std::str::FromStr for EtcdUrl {
    type Err = String;

    fn from_str(url: &str) -> std::result::Result<Self, String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("`{url}`: a store URL starts with etcd://"))?;
        let (hosts, prefix) = match rest.find('/') {
            Some(at) => (&rest[..at], rest[at..].trim_end_matches('/')),
            None => (rest, DEFAULT_PREFIX),
        };
        let prefix = if prefix.is_empty() {
            DEFAULT_PREFIX
        } else {
            prefix
        };
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(|host| format!("http://{host}"))
            .collect();
        if hosts.is_empty() || hosts.split(',').any(|h| h.rsplit_once(':').is_none()) {
            return Err(format!(
                "`{url}`: give etcd endpoints as HOST:PORT[,HOST:PORT...]"
            ));
        }
        Ok(EtcdUrl {
            endpoints,
            prefix: prefix.to_owned(),
        })
    }
}

impl EtcdUrl {
    /// `PREFIX/`: every key of the store starts with it.
    pub(super) fn root(&self) -> Vec<u8> {
        format!("{}/", self.prefix).into_bytes()
    }
}

impl std::fmt::Display for EtcdUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        write!(f, "etcd://{}{}", hosts.join(","), self.prefix)
    }
}

/// How long one etcd request may take before it counts as failed.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn connect(url: &EtcdUrl) -> Result<Client> {
    connect_with(url, ConnectOptions::new()).await
}

/// The follower's watch requires a leader (etcd's `hasleader` metadata): a member cut off
/// from its peers ends it, rather than keeping it open and silent.
pub(super) async fn connect_with(url: &EtcdUrl, options: ConnectOptions) -> Result<Client> {
    let options = options
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2));
    Client::connect(&url.endpoints, Some(options))
        .await
        .map_err(|e| unreachable_cluster(&e))
}

/// `root` + table name + `/` + key.
pub(super) fn table_key(root: &[u8], table: Table, key: &[u8]) -> Vec<u8> {
    [root, table.name().as_bytes(), b"/", key].concat()
}

/// The table and key an etcd key (without the root) names, if it is in a table.
pub(super) fn split_key(relative: &[u8]) -> Option<(Table, &[u8])> {
    let slash = relative.iter().position(|&b| b == b'/')?;
    let table = Table::from_name(std::str::from_utf8(&relative[..slash]).ok()?)?;
    Some((table, &relative[slash + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn store_urls_name_endpoints_and_a_prefix() {
        let url: EtcdUrl = "etcd://10.0.0.1:2379,10.0.0.2:2379/teams/zsc/"
            .parse()
            .unwrap();
        assert_eq!(
            url.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(url.prefix, "/teams/zsc");
        assert_eq!(
            url.to_string(),
            "etcd://10.0.0.1:2379,10.0.0.2:2379/teams/zsc"
        );
        let url: EtcdUrl = "etcd://localhost:2379".parse().unwrap();
        assert_eq!(url.prefix, DEFAULT_PREFIX);
        for bad in [
            "http://localhost:2379",
            "etcd://",
            "etcd:///zsc",
            "etcd://host/zsc",
            "etcd://a:1,,b:2",
        ] {
            assert!(bad.parse::<EtcdUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_split_back_into_their_table() {
        let key = table_key(b"/zsc/", Table::Keys, b"\x00/\xff");
        assert_eq!(
            split_key(&key[b"/zsc/".len()..]),
            Some((Table::Keys, &b"\x00/\xff"[..]))
        );
        assert_eq!(split_key(b"nosuchtable/x"), None);
    }
}
