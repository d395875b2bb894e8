//! What a source grants its connector: the hosts it may call and the environment variables
//! it may read. A component whose spec needs more does not load; a request outside the
//! grant is refused by the host.

use std::collections::BTreeMap;

/// A source's grant, from its `allow_hosts` and `allow_env` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// `host` (any port) or `host:port`, lower case.
    pub hosts: Vec<String>,
    /// The granted variables and their values (`None`: unset in the environment).
    pub env: BTreeMap<String, Option<String>>,
}

/// A comma-separated option value as its items.
pub fn list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Grant {
    /// The grant of `allow_hosts` and `allow_env`, reading the granted variables now.
    pub fn new(allow_hosts: Option<&str>, allow_env: Option<&str>) -> Grant {
        Grant {
            hosts: list(allow_hosts)
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            env: list(allow_env)
                .into_iter()
                .map(|n| {
                    let v = std::env::var(&n).ok();
                    (n, v)
                })
                .collect(),
        }
    }

    /// Whether a declared host need (`host` or `host:port`) is covered.
    pub fn covers_host(&self, need: &str) -> bool {
        let need = need.to_ascii_lowercase();
        self.hosts
            .iter()
            .any(|g| *g == need || need.split_once(':').is_some_and(|(h, _)| h == g.as_str()))
    }

    /// Whether a request to `url` is granted: its host, or its `host:port`, is listed.
    /// Returns the `host:port` the request would reach, for the refusal's message.
    pub fn allows_url(&self, url: &url::Url) -> Result<(), String> {
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        let with_port = match url.port_or_known_default() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let ok = matches!(url.scheme(), "http" | "https")
            && self.hosts.iter().any(|g| *g == host || *g == with_port);
        if ok { Ok(()) } else { Err(with_port) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_granted_by_name_or_name_and_port() {
        let g = Grant::new(Some("api.example.com, 127.0.0.1:8080"), None);
        assert!(g.covers_host("API.example.com"));
        assert!(g.covers_host("api.example.com:443"));
        assert!(g.covers_host("127.0.0.1:8080"));
        assert!(!g.covers_host("127.0.0.1"));
        assert!(!g.covers_host("evil.example.com"));
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert!(g.allows_url(&u("https://api.example.com/x")).is_ok());
        assert!(g.allows_url(&u("http://127.0.0.1:8080/x")).is_ok());
        assert_eq!(
            g.allows_url(&u("http://127.0.0.1:9090/x")),
            Err("127.0.0.1:9090".to_string())
        );
        assert!(g.allows_url(&u("file:///etc/passwd")).is_err());
    }
}
