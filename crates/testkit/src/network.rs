//! A whole network in one test process: a scripted mock upstream, a hub on `127.0.0.1:0` with a
//! temporary SQLite store, and nodes, each a real WebSocket client of the hub. Tests and benchmarks
//! talk to it over loopback exactly as users would.

use std::net::SocketAddr;
use std::sync::Arc;

use stacknet_hub::store::StackRecord;
use stacknet_hub::{Hub, HubConfig, LedgerLayer};
use stacknet_node::{Backend, Node, NodeOptions, OpenAiUpstream, UpstreamConfig, Wallet};
use stacknet_protocol::{SecretKey, StackId, Timestamp};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::mock_upstream::{MockUpstream, Script, MOCK_MODEL};
use crate::wait_until;

pub use crate::wait::WAIT_DEADLINE;

/// Polls `cond` until it holds or [`WAIT_DEADLINE`] passes; returns whether it held. Prefer
/// [`crate::wait_until`], which fails the test itself and names what it waited for.
pub async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    crate::wait::poll(WAIT_DEADLINE, || std::future::ready(cond().then_some(())))
        .await
        .is_some()
}

/// A running hub that can be stopped and started again on the same port and data.
#[derive(Debug)]
pub struct TestHub {
    pub hub: Hub,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestHub {
    pub async fn start(config: HubConfig, addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_layered(config, addr, Box::new(|ledger| ledger)).await
    }

    /// As [`TestHub::start`], with the hub's ledger seen through `layer` (a ledger that fails on cue).
    pub async fn start_layered(
        config: HubConfig,
        addr: SocketAddr,
        layer: LedgerLayer,
    ) -> std::io::Result<Self> {
        let hub = Hub::open_layered(config, layer)
            .await
            .map_err(std::io::Error::other)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let served = hub.clone();
        let task = tokio::spawn(async move {
            let _ = stacknet_hub::serve(listener, served, async move {
                let _ = stopped.await;
            })
            .await;
        });
        Ok(Self {
            hub,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving: open connections (nodes included) are closed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(WAIT_DEADLINE, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// A running node; dropping or killing it closes its connection like a crashed process would.
#[derive(Debug)]
pub struct TestNode {
    pub node: Node,
    /// The node's key (a test files paperwork and signs requests with it).
    pub key: SecretKey,
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl TestNode {
    pub async fn start_with(
        options: NodeOptions,
        upstream: &str,
        models: &[&str],
        data: &std::path::Path,
    ) -> Self {
        let config = UpstreamConfig::new(upstream, models.iter().map(|m| (*m).to_owned()).collect());
        let backend = OpenAiUpstream::new(&config).expect("upstream config is valid");
        Self::start_backend(options, Arc::new(backend), data).await
    }

    /// A node running any backend (built-in models, a combination of backends).
    pub async fn start_backend(
        options: NodeOptions,
        backend: Arc<dyn Backend>,
        data: &std::path::Path,
    ) -> Self {
        Self::start_keyed(options, backend, data, SecretKey::generate()).await
    }

    /// As [`TestNode::start_backend`], with the node's key given (a key bought on the market).
    pub async fn start_keyed(
        options: NodeOptions,
        backend: Arc<dyn Backend>,
        data: &std::path::Path,
        key: SecretKey,
    ) -> Self {
        let wallet =
            Wallet::open(data.join(format!("wallet-{}.sqlite", rand_suffix()))).expect("wallet opens");
        let node = Node::new(key.clone(), wallet, backend, options).expect("node options valid");
        let (stop, stopped) = oneshot::channel::<()>();
        let running = node.clone();
        let task = tokio::spawn(async move {
            running
                .run(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            node,
            key,
            task,
            stop: Some(stop),
        }
    }

    /// Kills the node at once: no drain, its socket just closes.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Stops the node gracefully.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

fn rand_suffix() -> String {
    stacknet_protocol::Nonce::random()
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Hub, node and mock upstream, with a Stack and an API key.
#[derive(Debug)]
pub struct TestNetwork {
    pub dir: tempfile::TempDir,
    pub upstream: MockUpstream,
    pub hub: TestHub,
    pub nodes: Vec<TestNode>,
    pub stack: StackId,
    pub api_key: String,
    pub admin_token: String,
}

impl TestNetwork {
    /// One node serving [`MOCK_MODEL`] through a mock upstream playing `script`.
    pub async fn start(script: Script) -> Self {
        Self::start_with(script, |_| {}).await
    }

    /// As [`TestNetwork::start`], with the hub's configuration adjusted first.
    pub async fn start_with(script: Script, adjust: impl FnOnce(&mut HubConfig)) -> Self {
        let mut net = Self::start_without_nodes(script, adjust).await;
        net.add_node().await;
        net
    }

    /// As [`TestNetwork::start_with`], with the hub's ledger seen through `layer`.
    pub async fn start_layered(
        script: Script,
        adjust: impl FnOnce(&mut HubConfig),
        layer: LedgerLayer,
    ) -> Self {
        let mut net = Self::start_without_nodes_layered(script, adjust, layer).await;
        net.add_node().await;
        net
    }

    /// Hub and upstream only; add nodes with [`TestNetwork::add_node_with`].
    pub async fn start_without_nodes(script: Script, adjust: impl FnOnce(&mut HubConfig)) -> Self {
        Self::start_without_nodes_layered(script, adjust, Box::new(|ledger| ledger)).await
    }

    /// As [`TestNetwork::start_without_nodes`], with the hub's ledger seen through `layer`.
    pub async fn start_without_nodes_layered(
        script: Script,
        adjust: impl FnOnce(&mut HubConfig),
        layer: LedgerLayer,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let upstream = MockUpstream::start(script).await.expect("mock upstream starts");
        let admin_token = "test-admin-token".to_owned();
        let mut config = HubConfig::new(dir.path().join("hub"), admin_token.clone());
        config.heartbeat_interval_ms = 1_000;
        // Second opinions are drawn at random; tests that count rounds or wait for a PASS to be
        // final would see one in ten PASSes go to another validator. `hub::validate` turns them on.
        config.rules.second_opinion_bps = 0;
        adjust(&mut config);
        let hub = TestHub::start_layered(config, "127.0.0.1:0".parse().expect("address"), layer)
            .await
            .expect("hub starts");
        let (stack, api_key) = create_stack(&hub.hub.state, "test").await;
        Self {
            dir,
            upstream,
            hub,
            nodes: Vec::new(),
            stack,
            api_key,
            admin_token,
        }
    }

    /// A new Stack and an API key for it (the network's own Stack is [`TestNetwork::stack`]).
    pub async fn new_stack(&self, name: &str) -> (StackId, String) {
        create_stack(&self.hub.hub.state, name).await
    }

    /// Starts one more node on the shared upstream and waits until the hub has it.
    pub async fn add_node(&mut self) -> usize {
        let mut options = NodeOptions::new(self.hub.url());
        options.max_concurrency = 64;
        self.add_node_with(options).await
    }

    /// As [`TestNetwork::add_node`], with the node's options given (its hub URL is set here).
    pub async fn add_node_with(&mut self, mut options: NodeOptions) -> usize {
        options.hub_url = self.hub.url();
        let base = self.upstream.base_url().to_owned();
        let node = TestNode::start_with(options, &base, &[MOCK_MODEL], self.dir.path()).await;
        self.wait_connected(&node).await;
        self.bond(&node).await;
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Starts one more node on the shared upstream with `key` (one a sale bound to an id, say): not
    /// bonded, and not waited for (the test knows which id the hub runs it as).
    pub async fn add_node_with_key(&mut self, key: SecretKey) -> usize {
        let mut options = NodeOptions::new(self.hub.url());
        options.max_concurrency = 64;
        let config = UpstreamConfig::new(self.upstream.base_url(), vec![MOCK_MODEL.to_owned()]);
        let backend = OpenAiUpstream::new(&config).expect("upstream config is valid");
        let node = TestNode::start_keyed(options, Arc::new(backend), self.dir.path(), key).await;
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Starts a node on `backend` instead of the mock upstream, and waits until the hub has it.
    pub async fn add_backend_node(&mut self, backend: Arc<dyn Backend>) -> usize {
        let mut options = NodeOptions::new(self.hub.url());
        options.max_concurrency = 64;
        let node = TestNode::start_backend(options, backend, self.dir.path()).await;
        self.wait_connected(&node).await;
        self.bond(&node).await;
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Tops up and bonds `node` to the hub's minimum worker bond (nothing when it has it), as
    /// `stacknet up` does for its node, so the scheduler routes to it.
    pub async fn bond(&self, node: &TestNode) {
        self.bond_key(node.node.node_key_id()).await;
    }

    /// As [`TestNetwork::bond`], for any key (a raw WebSocket node a test drives itself).
    pub async fn bond_key(&self, id: stacknet_protocol::NodeKeyId) {
        let bonded = stacknet_hub::stake::auto_bond(&self.hub.hub.state, id).await;
        bonded.expect("the test kit's node bonds the minimum worker bond");
    }

    pub async fn wait_connected(&self, node: &TestNode) {
        let id = node.node.node_key_id();
        let nodes = self.hub.hub.state.nodes.clone();
        let connected = || std::future::ready(nodes.connected().iter().any(|n| n.id == id).then_some(()));
        wait_until(
            &format!("node {id} is connected to the hub"),
            WAIT_DEADLINE,
            connected,
        )
        .await;
    }

    pub fn base_url(&self) -> String {
        format!("{}/v1", self.hub.url())
    }

    /// Restarts the hub on the same port and data directory.
    pub async fn restart_hub(&mut self) {
        let config = (*self.hub.hub.state.config).clone();
        let addr = self.hub.addr;
        self.hub.stop().await;
        self.hub = TestHub::start(config, addr)
            .await
            .expect("hub restarts on the same port");
    }
}

/// A Stack named `name` in the hub's registry, and an API key for it.
async fn create_stack(state: &stacknet_hub::AppState, name: &str) -> (StackId, String) {
    let stack = StackRecord {
        id: StackId::random(),
        name: name.into(),
        created_at: Timestamp::now(),
    };
    state
        .store
        .create_stack(stack.clone())
        .await
        .expect("stack stored");
    let (key, _) = stacknet_hub::admin::issue_key(state, stack.id, stacknet_hub::store::KeyRole::Owner)
        .await
        .expect("key issued");
    (stack.id, key)
}
