//! Node configuration: what an operator writes in TOML (or the CLI fills in from flags), and the
//! runtime options a [`crate::Node`] needs, which tests and an in-process `stacknet up` build directly.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use stacknet_protocol::PublicKey;

/// Tasks a node runs at once unless configured otherwise.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 4;
/// The hardware class reported in paperwork for an upstream server whose hardware the node cannot see.
pub const DEFAULT_HARDWARE: &str = "upstream";
/// How long one upstream request (including its whole stream) may take.
pub const DEFAULT_UPSTREAM_TIMEOUT_SECS: u64 = 300;
/// Heartbeat intervals of silence from the hub after which the connection counts as dead.
pub const DEFAULT_HEARTBEAT_MISSES: u32 = 3;
/// How long shutdown waits for in-flight tasks to finish and deliver their paperwork.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 30;
/// File names inside the data directory.
pub const KEY_FILE_NAME: &str = "node.key";
pub const WALLET_FILE_NAME: &str = "wallet.sqlite";

/// An upstream API key. Never printed: `Debug` is redacted and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the one place that sends it (the `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(ApiKey)
    }
}

/// The OpenAI-compatible server the node forwards tasks to (Ollama, vLLM, llama.cpp server, OpenAI...).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL including the API prefix, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    #[serde(default)]
    pub api_key: Option<ApiKey>,
    /// The model names the node advertises; the upstream must serve them under the same names.
    pub models: Vec<String>,
    #[serde(default = "default_upstream_timeout_secs")]
    pub timeout_secs: u64,
}

impl UpstreamConfig {
    pub fn new(base_url: impl Into<String>, models: Vec<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            models,
            timeout_secs: DEFAULT_UPSTREAM_TIMEOUT_SECS,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// Everything `stacknet node` needs, as read from TOML:
///
/// ```toml
/// hub = "https://hub.example"
/// data_dir = "/var/lib/stacknet"
/// # hub_key = "8a88e3dd..."   # refuse any other hub
/// max_concurrency = 4
/// [upstream]
/// base_url = "http://127.0.0.1:11434/v1"
/// models = ["llama3.2"]
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The hub's base URL (`http(s)://` or `ws(s)://`); the node connects to its node gateway.
    pub hub: String,
    /// Holds the wallet and, unless `key_file` says otherwise, the Node Key.
    pub data_dir: PathBuf,
    /// Defaults to `<data_dir>/node.key`; created on first start.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// When set, the node talks only to the hub holding this key.
    #[serde(default)]
    pub hub_key: Option<PublicKey>,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u32,
    /// Hardware class written into paperwork.
    #[serde(default = "default_hardware")]
    pub hardware: String,
    #[serde(default = "default_heartbeat_misses")]
    pub heartbeat_misses: u32,
    #[serde(default = "default_drain_timeout_secs")]
    pub drain_timeout_secs: u64,
    pub upstream: UpstreamConfig,
}

impl NodeConfig {
    /// Defaults for everything but the hub, the data directory and the upstream.
    pub fn new(hub: impl Into<String>, data_dir: impl Into<PathBuf>, upstream: UpstreamConfig) -> Self {
        Self {
            hub: hub.into(),
            data_dir: data_dir.into(),
            key_file: None,
            hub_key: None,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            hardware: DEFAULT_HARDWARE.to_owned(),
            heartbeat_misses: DEFAULT_HEARTBEAT_MISSES,
            drain_timeout_secs: DEFAULT_DRAIN_TIMEOUT_SECS,
            upstream,
        }
    }

    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn key_path(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(KEY_FILE_NAME))
    }

    pub fn wallet_path(&self) -> PathBuf {
        wallet_path(&self.data_dir)
    }

    /// The runtime options of the node itself (everything but files and the backend).
    pub fn node_options(&self) -> NodeOptions {
        NodeOptions {
            hub_url: self.hub.clone(),
            hub_key: self.hub_key,
            max_concurrency: self.max_concurrency,
            hardware: self.hardware.clone(),
            heartbeat_misses: self.heartbeat_misses,
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
        }
    }
}

/// Where the wallet lives in a data directory.
pub fn wallet_path(data_dir: &Path) -> PathBuf {
    data_dir.join(WALLET_FILE_NAME)
}

/// What a running [`crate::Node`] needs besides its key, wallet and backend.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The hub's base URL, as in [`NodeConfig::hub`].
    pub hub_url: String,
    pub hub_key: Option<PublicKey>,
    pub max_concurrency: u32,
    pub hardware: String,
    pub heartbeat_misses: u32,
    pub drain_timeout: Duration,
}

impl NodeOptions {
    /// Defaults for everything but the hub.
    pub fn new(hub_url: impl Into<String>) -> Self {
        Self {
            hub_url: hub_url.into(),
            hub_key: None,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            hardware: DEFAULT_HARDWARE.to_owned(),
            heartbeat_misses: DEFAULT_HEARTBEAT_MISSES,
            drain_timeout: Duration::from_secs(DEFAULT_DRAIN_TIMEOUT_SECS),
        }
    }
}

fn default_max_concurrency() -> u32 {
    DEFAULT_MAX_CONCURRENCY
}

fn default_hardware() -> String {
    DEFAULT_HARDWARE.to_owned()
}

fn default_heartbeat_misses() -> u32 {
    DEFAULT_HEARTBEAT_MISSES
}

fn default_drain_timeout_secs() -> u64 {
    DEFAULT_DRAIN_TIMEOUT_SECS
}

fn default_upstream_timeout_secs() -> u64 {
    DEFAULT_UPSTREAM_TIMEOUT_SECS
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_defaults_and_a_redacted_key() {
        let config = NodeConfig::from_toml(
            r#"
            hub = "http://127.0.0.1:8080"
            data_dir = "/tmp/node"
            [upstream]
            base_url = "http://127.0.0.1:11434/v1"
            api_key = "sk-very-secret"
            models = ["llama3.2"]
            "#,
        )
        .unwrap();
        assert_eq!(config.max_concurrency, DEFAULT_MAX_CONCURRENCY);
        assert_eq!(config.hardware, "upstream");
        assert_eq!(config.upstream.timeout_secs, 300);
        assert_eq!(config.key_path(), PathBuf::from("/tmp/node/node.key"));
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret"), "{printed}");
        assert_eq!(config.upstream.api_key.unwrap().expose(), "sk-very-secret");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = NodeConfig::from_toml(
            "hub = \"x\"\ndata_dir = \"y\"\nhubb = 1\n[upstream]\nbase_url = \"u\"\nmodels = []\n",
        );
        assert!(err.is_err());
    }
}
