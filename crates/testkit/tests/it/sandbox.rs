//! Sandboxed code execution, on the real sandbox (bubblewrap, cgroups, an unprivileged uid per
//! slot): hello world in each language, each limit ending its run with a clear status and the node
//! healthy after it, and the abuse cases a stranger's program tries (reading the node's secrets,
//! writing outside its work directory, the network, privileges, symlinks out, processes and files
//! left behind). Then the same through hub and node: charged per sandbox second, with paperwork
//! whose output digest a client recomputes from the answer.
//!
//! They need bubblewrap and writable cgroup limits, which `scripts/test.sh` provides (it installs
//! bubblewrap; CI runs as root on cgroup v1).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use stacknet_api::output::digest_of_response;
use stacknet_api::request::code;
use stacknet_node::backend::sandbox::Sandbox;
use stacknet_node::config::SandboxBackendConfig;
use stacknet_node::{Backend, BackendError, BackendTask, Cancellation};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::ContractId;
use stacknet_sdk::verify::{self, Content};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;
use stacknet_testkit::{wait_until, WAIT_DEADLINE};
use tokio::sync::mpsc;

use crate::hub::{client, paperwork_of};

/// A sandbox whose state directory is under `dir`, with small limits so each test is quick, its
/// slots' uids from `first_uid` (each test its own, as tests run at once).
async fn sandbox(dir: &Path, first_uid: u32) -> Sandbox {
    let config = SandboxBackendConfig {
        first_uid: Some(first_uid),
        state_dir: Some(dir.join("state")),
        max_file_bytes: Some(2 * 1024 * 1024),
        work_dir_bytes: Some(8 * 1024 * 1024),
        max_processes: Some(32),
        max_output_bytes: Some(16 * 1024),
        // Every run makes its own sandbox (so nothing of the sandbox's uids is left between runs);
        // `sandboxes_made_ahead_serve_runs_warm` tests the others.
        warm: Some(0),
        ..Default::default()
    };
    Sandbox::start(&config)
        .await
        .expect("the sandbox starts on this machine")
}

/// Runs a request on the sandbox, as the node's runtime would, and returns its result.
async fn try_run(sandbox: &Sandbox, body: Value) -> Result<(Value, u64), BackendError> {
    let (result, outcome) = run_outcome(sandbox, body).await?;
    Ok((result, outcome.usage.expect("usage").units))
}

/// As [`try_run`], with the whole outcome.
async fn run_outcome(
    sandbox: &Sandbox,
    body: Value,
) -> Result<(Value, stacknet_node::BackendOutcome), BackendError> {
    let (request, _) = code::validate(body.clone()).expect("a valid request");
    let task = BackendTask {
        contract: ContractId::random(),
        workload: Workload::CodeExecution,
        model: request.model,
        request: Arc::new(body),
        files: Arc::new(Vec::new()),
        cancel: Cancellation::never(),
    };
    let (tx, mut rx) = mpsc::channel(4);
    let outcome = sandbox.execute(task, tx).await?;
    let result = rx.recv().await.expect("one result chunk");
    assert!(rx.try_recv().is_err(), "exactly one chunk");
    Ok((result, outcome))
}

/// The Stack's available balance, in micro-credits.
async fn available(net: &TestNetwork) -> i64 {
    let statement: Value = client()
        .get(format!("{}/stacknet/v1/statement", net.hub.url()))
        .bearer_auth(&net.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    statement["balance"]["available"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn run(sandbox: &Sandbox, language: &str, code: &str, extra: Value) -> Value {
    let mut body = json!({"language": language, "files": [{"name": "main", "content": code}]});
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    try_run(sandbox, body).await.expect("the run finishes").0["run"].clone()
}

/// The uids the sandbox's slots run as hold no process (not even a zombie), and its state
/// directory no run.
pub(crate) fn nothing_left(dir: &Path, first_uid: u32) {
    let (left, runs) = leftovers(dir, first_uid);
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert!(runs.is_empty(), "files left behind: {runs:?}");
}

type Process = (std::ffi::OsString, u32, String, String, String);

/// The processes of the sandbox's uids (pid, uid, name, state, parent) and the runs in its state
/// directory.
fn leftovers(dir: &Path, first_uid: u32) -> (Vec<Process>, Vec<PathBuf>) {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let uid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok())
            .unwrap_or(0);
        if (first_uid..first_uid + 4).contains(&uid) {
            let field = |name: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(name))
                    .unwrap_or("")
                    .to_owned()
            };
            left.push((
                entry.file_name(),
                uid,
                field("Name:"),
                field("State:"),
                field("PPid:"),
            ));
        }
    }
    let runs: Vec<PathBuf> = std::fs::read_dir(dir.join("state"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    (left, runs)
}

#[tokio::test]
#[ignore = "needs bubblewrap and cgroup limits (scripts/test.sh installs bubblewrap and runs it)"]
async fn hello_world_in_each_language() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), 61000).await;
    let offered: Vec<String> = sb.models().into_iter().map(|m| m.name).collect();
    assert_eq!(offered, ["python", "bash", "javascript"], "{:?}", sb.languages());
    let programs = [
        ("python", "import sys\nprint('hello from', sys.argv[1], input())"),
        ("bash", "read line; echo \"hello from $1 $line\""),
        ("javascript", "const l = require('fs').readFileSync(0, 'utf8').trim(); console.log('hello from', process.argv[2], l)"),
    ];
    for (language, program) in programs {
        let body = json!({"language": language, "files": [{"name": "main", "content": program}],
                          "args": ["args"], "stdin": "and stdin\n"});
        let (result, seconds) = try_run(&sb, body).await.unwrap();
        let r = &result["run"];
        assert_eq!(r["stdout"], "hello from args and stdin\n", "{language}: {result}");
        assert_eq!(
            (r["code"].as_i64(), r["status"].is_null()),
            (Some(0), true),
            "{result}"
        );
        assert_eq!(result["language"], language);
        assert!(result["version"]
            .as_str()
            .unwrap()
            .starts_with(|c: char| c.is_ascii_digit()));
        assert_eq!(seconds, 1);
    }
    // Several files: the first runs, the others sit beside it in the work directory, writable.
    let body = json!({"language": "python", "files": [
        {"name": "main.py", "content": "import util, os\nopen('out.txt', 'w').write('x')\nprint(util.X, os.getcwd(), sorted(os.listdir('.')))"},
        {"name": "util.py", "content": "X = 42"}]});
    let (result, _) = try_run(&sb, body).await.unwrap();
    assert_eq!(
        result["run"]["stdout"], "42 /work ['main.py', 'out.txt', 'util.py']\n",
        "{result}"
    );
    nothing_left(dir.path(), 61000);
}

#[tokio::test]
#[ignore = "needs bubblewrap and cgroup limits (scripts/test.sh installs bubblewrap and runs it)"]
async fn each_limit_ends_the_run_with_its_status_and_the_node_stays_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), 61010).await;
    let cases = [
        (
            "wall time",
            "python",
            "while True: pass",
            json!({"run_timeout": 1500, "run_cpu_time": 1500}),
            "TO",
        ),
        (
            "sleeping past the wall time",
            "bash",
            "sleep 30",
            json!({"run_timeout": 1000}),
            "TO",
        ),
        (
            "memory",
            "python",
            "x = []\nwhile True: x.append(bytearray(8 << 20))",
            json!({"run_memory_limit": 64 << 20}),
            "ML",
        ),
        (
            "stdout flood",
            "python",
            "while True: print('y' * 1000)",
            json!({}),
            "OL",
        ),
        (
            "stderr flood",
            "bash",
            "while true; do echo err >&2; done",
            json!({}),
            "EL",
        ),
        // (Python ignores SIGXFSZ and gets "File too large"; head is killed by it.)
        (
            "a file over the size limit",
            "bash",
            "exec head -c 3145728 /dev/zero > big",
            json!({}),
            "SG",
        ),
    ];
    for (what, language, program, extra, status) in cases {
        let r = run(&sb, language, program, extra).await;
        assert_eq!(r["status"], status, "{what}: {r}");
        assert!(
            r["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {r}"
        );
    }
    // A fork bomb meets the process limit, then the wall time; the machine does not notice.
    let bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass";
    let r = run(&sb, "python", bomb, json!({"run_timeout": 2000})).await;
    assert_eq!(r["status"], "TO", "{r}");
    // The shell's classic form returns at once (its first call forks into the background and the
    // script ends, and every process with it).
    let r = run(&sb, "bash", ":(){ :|:& };:", json!({"run_timeout": 2000})).await;
    assert!(r["wall_time"].as_u64().unwrap() < 2000, "{r}");
    // Filling the disk: the work directory is full, the program is told so, nothing else fills.
    let r = run(
        &sb,
        "bash",
        "i=0; while dd if=/dev/zero of=f$i bs=1M count=1 2>/dev/null; do i=$((i+1)); done; echo filled $i; df -k /work | tail -1",
        json!({}),
    )
    .await;
    assert!(r["stdout"].as_str().unwrap().starts_with("filled "), "{r}");
    let filled: u64 = r["stdout"].as_str().unwrap()[7..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(filled <= 8, "the 8 MiB work directory took {filled} MiB: {r}");
    // CPU time is counted; memory's peak is reported.
    let r = run(&sb, "python", "sum(range(3_000_000))", json!({})).await;
    assert!(
        r["cpu_time"].as_u64().unwrap() > 0 && r["memory"].as_u64().unwrap() > 0,
        "{r}"
    );
    // And after all of it the node runs the next program as if nothing happened.
    let r = run(&sb, "python", "print('still here')", json!({})).await;
    assert_eq!(r["stdout"], "still here\n", "{r}");
    nothing_left(dir.path(), 61010);
}

#[tokio::test]
#[ignore = "needs bubblewrap and cgroup limits (scripts/test.sh installs bubblewrap and runs it)"]
async fn a_program_cannot_read_secrets_write_outside_reach_the_network_or_gain_privileges() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), 61020).await;
    // The node's secrets, as a node keeps them: a key file and a wallet, owned by the node's user.
    let secrets = dir.path().join("node");
    std::fs::create_dir_all(&secrets).unwrap();
    for name in ["node.key", "wallet.db"] {
        std::fs::write(secrets.join(name), "secret").unwrap();
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = format!(
        r#"
import os, socket
def attempt(what, f):
    try:
        f()
        print(what, 'ALLOWED')
    except Exception as e:
        print(what, 'refused', type(e).__name__)
for path in ['/etc/shadow', '{secrets}/node.key', '{secrets}/wallet.db', '/root/.ssh', '/proc/1/root/etc/shadow', '{state}']:
    attempt('read ' + path, lambda: open(path).read() if os.path.isfile(path) else os.listdir(path))
for path in ['/usr/evil', '/etc/evil', '/evil', '/proc/evil', '/in/evil', '/newdir/evil']:
    attempt('write ' + path, lambda: open(path, 'w').write('x'))
os.symlink('/etc/shadow', 'shadow')
os.symlink('{secrets}/node.key', 'key')
attempt('read through a symlink to /etc/shadow', lambda: open('shadow').read())
attempt('read through a symlink to the node key', lambda: open('key').read())
attempt('connect to the node port', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=1))
attempt('resolve a name', lambda: socket.getaddrinfo('example.com', 80))
attempt('connect out', lambda: socket.create_connection(('1.1.1.1', 80), timeout=1))
attempt('become root', lambda: os.setuid(0))
import subprocess
attempt('a new user namespace', lambda: subprocess.run(['unshare', '--user', 'true'], check=True, capture_output=True))
print('uid', os.getuid(), 'euid', os.geteuid())
print([l for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm', 'NoNewPrivs'))])
print('interfaces', sorted(os.listdir('/sys/class/net')) if os.path.isdir('/sys/class/net') else 'none')
"#,
        secrets = secrets.display(),
        state = dir.path().join("state").display(),
    );
    let r = run(&sb, "python", &probe, json!({})).await;
    let out = r["stdout"].as_str().unwrap();
    assert!(!out.contains("ALLOWED"), "{out}\n{}", r["stderr"]);
    assert_eq!(out.matches("refused").count(), 19, "{out}\n{}", r["stderr"]);
    assert!(!out.contains("uid 0 "), "{out}");
    assert!(out.contains("CapEff:\\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\\t1"), "{out}");
    // A setuid program gives nothing either.
    let r = run(&sb, "bash", "su -c id root </dev/null; id -u", json!({})).await;
    assert!(!r["stdout"].as_str().unwrap().starts_with("0"), "{r}");
    drop(listener);
    nothing_left(dir.path(), 61020);
}

#[tokio::test]
#[ignore = "needs bubblewrap and cgroup limits (scripts/test.sh installs bubblewrap and runs it)"]
async fn nothing_outlives_its_run() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), 61030).await;
    // A daemon that detaches and sleeps, and a file in /tmp and /dev/shm.
    let r = run(
        &sb,
        "bash",
        "(setsid sleep 1000 &) ; nohup sleep 1000 >/dev/null 2>&1 & echo x > /tmp/left; echo y > /dev/shm/left 2>/dev/null; echo started",
        json!({}),
    )
    .await;
    assert_eq!(r["stdout"], "started\n", "{r}");
    let r = run(
        &sb,
        "bash",
        "ls /tmp /dev/shm 2>&1; pgrep sleep || echo no sleeper",
        json!({}),
    )
    .await;
    assert!(!r["stdout"].as_str().unwrap().contains("left"), "{r}");
    assert!(r["stdout"].as_str().unwrap().contains("no sleeper"), "{r}");
    nothing_left(dir.path(), 61030);
}

#[tokio::test]
#[ignore = "needs bubblewrap and cgroup limits (scripts/test.sh installs bubblewrap and runs it)"]
async fn code_runs_through_the_hub_charged_per_second_with_paperwork() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    net.add_backend_node(Arc::new(sandbox(dir.path(), 61040).await))
        .await;
    let price = 1_000u64;
    let resp = client()
        .post(format!("{}/stacknet/v1/admin/prices", net.hub.url()))
        .bearer_auth(&net.admin_token)
        .json(&json!({"model": "python", "per_unit": price.to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let resp = client()
        .post(format!(
            "{}/stacknet/v1/admin/stacks/{}/topup",
            net.hub.url(),
            net.stack
        ))
        .bearer_auth(&net.admin_token)
        .json(&json!({"amount": "1000000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let before = available(&net).await;
    let url = format!("{}/stacknet/v1/execute", net.hub.url());
    let body = json!({"language": "python3", "version": "*",
                      "files": [{"name": "main.py", "content": "import time\ntime.sleep(1.2)\nprint(6 * 7)"}]});
    let resp = client()
        .post(&url)
        .bearer_auth(&net.api_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["run"]["stdout"], "42\n", "{answer}");
    assert_eq!(answer["usage"]["sandbox_seconds"], 2, "{answer}");
    let paperwork = paperwork_of(&net, &answer).await;
    assert_eq!(paperwork.body.usage.units, 2);
    assert_eq!(
        digest_of_response(Workload::CodeExecution, &answer).unwrap(),
        paperwork.body.output_sha256,
        "the client recomputes the output digest from the answer"
    );
    // And the SDK verifies the whole answer: fingerprint, paperwork, content.
    let hub_key = net.hub.hub.state.hub_key.public_key();
    verify::answer(&Content::Whole(answer.clone()), &paperwork, &hub_key).expect("the answer verifies");
    wait_until(
        "the Stack is charged 2 sandbox seconds",
        Duration::from_secs(10),
        || async { (available(&net).await == before - 2 * price as i64).then_some(()) },
    )
    .await;

    // Refusals name the field, before any node is asked.
    for (bad, param) in [
        (
            json!({"language": "cobol", "files": [{"content": "x"}]}),
            "language",
        ),
        (
            json!({"language": "python", "files": [{"name": "../x", "content": "x"}]}),
            "files[0].name",
        ),
        (
            json!({"language": "python", "files": [{"content": "x"}], "run_timeout": 10_000_000}),
            "run_timeout",
        ),
    ] {
        let resp = client()
            .post(&url)
            .bearer_auth(&net.api_key)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{err}");
    }
    // Over this node's own limit: the node refuses it, the client is told why, nothing is charged.
    let over = json!({"language": "python", "files": [{"content": "x"}], "run_timeout": 120_000});
    let resp = client()
        .post(&url)
        .bearer_auth(&net.api_key)
        .json(&over)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let err: Value = resp.json().await.unwrap();
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over this node's limit"),
        "{err}"
    );
}

/// Sandboxes made ahead of runs: a run takes one (its outcome says warm), another is made in the
/// background, and the languages are reported ready; every run still starts clean (nothing one run
/// left in `/work` is there for the next) and under its own limits (a sandbox made ahead has the
/// most memory any run may ask for, a run gets what it asked). Dropped, the sandbox leaves no
/// process, cgroup or file.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs bubblewrap and cgroup limits (scripts/test.sh installs bubblewrap and runs it)"]
async fn sandboxes_made_ahead_serve_runs_warm() {
    const FIRST_UID: u32 = 61_060;
    let dir = tempfile::tempdir().unwrap();
    let config = SandboxBackendConfig {
        first_uid: Some(FIRST_UID),
        state_dir: Some(dir.path().join("state")),
        warm: Some(2),
        ..Default::default()
    };
    let sb = Sandbox::start(&config).await.unwrap();
    let ready: Vec<String> = sb.ready().into_iter().map(|r| r.name).collect();
    assert_eq!(ready, ["python", "bash", "javascript"]);
    let made_ahead = &sb;
    let two_waiting = move || async move { (made_ahead.waiting() == 2).then_some(()) };
    wait_until("two sandboxes are made ahead", WAIT_DEADLINE, two_waiting).await;
    for _ in 0..3 {
        let (result, outcome) = run_outcome(
            &sb,
            json!({"language": "bash", "files": [{"name": "m.sh",
                "content": "ls /work; touch /work/left-behind; echo $((6 * 7))"}]}),
        )
        .await
        .unwrap();
        assert_eq!(result["run"]["stdout"], "m.sh\n42\n", "{result}");
        assert!(outcome.warm, "the run took a sandbox made ahead");
        wait_until("another is made in its place", WAIT_DEADLINE, two_waiting).await;
    }
    let (result, outcome) = run_outcome(
        &sb,
        json!({"language": "python", "run_memory_limit": 64 * 1024 * 1024, "files": [{"name": "m.py",
            "content": "x = bytearray(256 * 1024 * 1024)\nprint(len(x))"}]}),
    )
    .await
    .unwrap();
    assert!(outcome.warm);
    assert_eq!(result["run"]["status"], "ML", "{result}");
    wait_until("another is made in its place", WAIT_DEADLINE, two_waiting).await;
    drop(sb);
    let mut gone = false;
    for _ in 0..100 {
        let (left, runs) = leftovers(dir.path(), FIRST_UID);
        if left.is_empty() && runs.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "left behind: {:?}", leftovers(dir.path(), FIRST_UID));
}
