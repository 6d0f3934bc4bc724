//! Resource limits for sandbox runs, from cgroups: memory (without swap), processes and CPU share,
//! one cgroup per run, made under the node's own cgroup and removed after the run.
//!
//! Both hierarchies are supported. cgroup v2 (every current distribution): one tree; the node's
//! cgroup must be delegated to it (systemd's `Delegate=yes`), and since v2 lets only cgroups without
//! processes of their own hand controllers down, the node first moves itself into a leaf
//! (`stacknet-node`) beside `stacknet-sandbox`, which holds the runs. cgroup v1 (older systems, and
//! this project's CI machines, where memory, pids and cpu exist only as v1 hierarchies): one tree per
//! controller, each given a `stacknet-sandbox` directory under the node's own cgroup.
//!
//! Where neither gives all three limits, the sandbox refuses to start and says what is missing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The controllers every run is limited by.
const NEEDED: [&str; 3] = ["memory", "pids", "cpu"];
/// The directory under the node's cgroup that holds the runs.
const SANDBOX_DIR: &str = "stacknet-sandbox";
/// Where a cgroup v2 node moves itself, so its own cgroup can hand controllers down.
const NODE_LEAF: &str = "stacknet-node";
/// The CPU accounting period (µs) the quota is given in.
const CPU_PERIOD_US: u64 = 100_000;

/// The cgroup hierarchy the sandbox's runs are made in.
#[derive(Clone, Debug)]
pub enum Hierarchy {
    /// cgroup v2: the `stacknet-sandbox` directory.
    V2 { base: PathBuf },
    /// cgroup v1: for each controller the sandbox uses, its `stacknet-sandbox` directory (several
    /// controllers may share one, when mounted together).
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
        cpuacct: Option<PathBuf>,
    },
}

/// The limits of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunLimits {
    pub memory_bytes: u64,
    pub pids: u64,
    /// CPU share, in thousandths of a core.
    pub millicpus: u64,
}

/// What a finished run used, as its cgroup counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub cpu_time_ms: u64,
    /// Peak memory; `None` where the kernel does not keep it.
    pub memory_peak_bytes: Option<u64>,
    /// The kernel killed a process of the run for memory.
    pub oom_killed: bool,
}

/// One run's cgroup (a directory per hierarchy directory it spans).
#[derive(Debug)]
pub struct RunGroup {
    hierarchy: Hierarchy,
    name: String,
}

impl Hierarchy {
    /// Finds the hierarchy that gives every limit, from this process's `/proc/self/mountinfo`
    /// and `/proc/self/cgroup`, and makes its `stacknet-sandbox` directory. `Err` says why none
    /// does, for the operator.
    pub fn detect() -> Result<Hierarchy, String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let mounts = cgroup_mounts(&mountinfo);
        let mut why = Vec::new();
        if let Some(root) = mounts.iter().find(|m| m.v2).map(|m| m.point.clone()) {
            let path = own_path(&own, None).unwrap_or_default();
            match Self::prepare_v2(&root.join(path.trim_start_matches('/'))) {
                Ok(h) => return Ok(h),
                Err(e) => why.push(format!("cgroup v2 at {}: {e}", root.display())),
            }
        }
        match Self::prepare_v1(&mounts, &own) {
            Ok(h) => Ok(h),
            Err(e) => {
                why.push(format!("cgroup v1: {e}"));
                Err(format!(
                    "the sandbox needs cgroup limits for memory, processes and CPU, and neither \
                     hierarchy gives them to this process ({}); on cgroup v2 run the node in a \
                     delegated cgroup (systemd: Delegate=yes), on v1 run it as root",
                    why.join("; ")
                ))
            }
        }
    }

    /// cgroup v2 under `own` (the node's cgroup directory): checks the controllers, moves the node
    /// into a leaf and enables the controllers for `stacknet-sandbox`.
    pub fn prepare_v2(own: &Path) -> Result<Hierarchy, String> {
        let available = fs::read_to_string(own.join("cgroup.controllers"))
            .map_err(|e| format!("cannot read {}: {e}", own.join("cgroup.controllers").display()))?;
        let missing: Vec<&str> = NEEDED
            .into_iter()
            .filter(|c| !available.split_whitespace().any(|a| a == *c))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the controllers {} are not available",
                missing.join(", ")
            ));
        }
        let enable = NEEDED.map(|c| format!("+{c}")).join(" ");
        let write = |path: PathBuf, value: &str| {
            fs::write(&path, value).map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        // A cgroup with processes of its own cannot hand controllers down: the node's processes
        // move into a leaf first (writing a pid moves the whole process).
        let procs = fs::read_to_string(own.join("cgroup.procs")).unwrap_or_default();
        if !procs.trim().is_empty() {
            let leaf = own.join(NODE_LEAF);
            make_dir(&leaf)?;
            for pid in procs.split_whitespace() {
                // A process that ended meanwhile is no longer there to move.
                let _ = fs::write(leaf.join("cgroup.procs"), pid);
            }
        }
        write(own.join("cgroup.subtree_control"), &enable)?;
        let base = own.join(SANDBOX_DIR);
        make_dir(&base)?;
        write(base.join("cgroup.subtree_control"), &enable)?;
        Ok(Hierarchy::V2 { base })
    }

    fn prepare_v1(mounts: &[Mount], own: &str) -> Result<Hierarchy, String> {
        let dir_of = |controller: &str| -> Result<PathBuf, String> {
            let mount = mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
                .ok_or_else(|| format!("no {controller} hierarchy is mounted"))?;
            let path = own_path(own, Some(controller)).unwrap_or_else(|| "/".to_owned());
            let base = mount.point.join(path.trim_start_matches('/')).join(SANDBOX_DIR);
            make_dir(&base)?;
            Ok(base)
        };
        Ok(Hierarchy::V1 {
            memory: dir_of("memory")?,
            pids: dir_of("pids")?,
            cpu: dir_of("cpu")?,
            cpuacct: dir_of("cpuacct").ok(),
        })
    }

    /// Which version, for messages and paperwork.
    pub fn version(&self) -> &'static str {
        match self {
            Hierarchy::V2 { .. } => "cgroup v2",
            Hierarchy::V1 { .. } => "cgroup v1",
        }
    }

    /// The directories a run named `name` spans, without repeats.
    fn dirs(&self, name: &str) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = match self {
            Hierarchy::V2 { base } => vec![base.join(name)],
            Hierarchy::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
            } => [Some(memory), Some(pids), Some(cpu), cpuacct.as_ref()]
                .into_iter()
                .flatten()
                .map(|b| b.join(name))
                .collect(),
        };
        dirs.dedup();
        dirs
    }

    /// Removes the cgroups of runs that `stale` names (those of a node process that is gone: its
    /// runs, and sandboxes it made ahead, died with it, but nothing else removes their cgroups).
    pub fn sweep(&self, stale: impl Fn(&str) -> bool) {
        for base in self.dirs("") {
            let Ok(entries) = fs::read_dir(&base) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.path().is_dir() && stale(&name) {
                    let group = RunGroup {
                        hierarchy: self.clone(),
                        name,
                    };
                    if let Err(e) = group.remove_now() {
                        tracing::warn!("{e}");
                    }
                }
            }
        }
    }

    /// Makes the cgroup of one run with its limits. A directory left by a run that did not clean
    /// up (a node killed mid-run) is emptied and reused.
    pub fn create(&self, name: &str, limits: RunLimits) -> Result<RunGroup, String> {
        let group = RunGroup {
            hierarchy: self.clone(),
            name: name.to_owned(),
        };
        for dir in self.dirs(name) {
            make_dir(&dir)?;
        }
        let write = |path: PathBuf, value: String| {
            fs::write(&path, value).map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        let quota = (limits.millicpus.max(10) * CPU_PERIOD_US / 1000).max(1000);
        match self {
            Hierarchy::V2 { base } => {
                let dir = base.join(name);
                write(dir.join("memory.max"), limits.memory_bytes.to_string())?;
                // No swap: the memory limit is the whole of it. (Absent without swap accounting.)
                if dir.join("memory.swap.max").exists() {
                    write(dir.join("memory.swap.max"), "0".to_owned())?;
                }
                write(dir.join("pids.max"), limits.pids.to_string())?;
                write(dir.join("cpu.max"), format!("{quota} {CPU_PERIOD_US}"))?;
            }
            Hierarchy::V1 {
                memory, pids, cpu, ..
            } => {
                write(
                    memory.join(name).join("memory.limit_in_bytes"),
                    limits.memory_bytes.to_string(),
                )?;
                // memsw (memory + swap) is at least the memory limit: the same, so no swap.
                let memsw = memory.join(name).join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(memsw, limits.memory_bytes.to_string())?;
                }
                write(pids.join(name).join("pids.max"), limits.pids.to_string())?;
                write(
                    cpu.join(name).join("cpu.cfs_period_us"),
                    CPU_PERIOD_US.to_string(),
                )?;
                write(cpu.join(name).join("cpu.cfs_quota_us"), quota.to_string())?;
            }
        }
        Ok(group)
    }
}

impl RunGroup {
    /// The files a process writes its pid (or `0`, itself) to, to join the run's cgroup in every
    /// hierarchy.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.hierarchy
            .dirs(&self.name)
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// What the run used.
    pub fn stats(&self) -> RunStats {
        let read = |path: PathBuf| fs::read_to_string(path).unwrap_or_default();
        let number = |path: PathBuf| read(path).trim().parse::<u64>().ok();
        let keyed = |text: &str, key: &str| {
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        };
        match &self.hierarchy {
            Hierarchy::V2 { base } => {
                let dir = base.join(&self.name);
                let cpu = read(dir.join("cpu.stat"));
                let events = read(dir.join("memory.events"));
                RunStats {
                    cpu_time_ms: keyed(&cpu, "usage_usec").unwrap_or(0) / 1000,
                    memory_peak_bytes: number(dir.join("memory.peak")),
                    oom_killed: keyed(&events, "oom_kill").unwrap_or(0) > 0,
                }
            }
            Hierarchy::V1 { memory, cpuacct, .. } => {
                let oom = read(memory.join(&self.name).join("memory.oom_control"));
                RunStats {
                    cpu_time_ms: cpuacct
                        .as_ref()
                        .and_then(|c| number(c.join(&self.name).join("cpuacct.usage")))
                        .unwrap_or(0)
                        / 1_000_000,
                    memory_peak_bytes: number(memory.join(&self.name).join("memory.max_usage_in_bytes")),
                    oom_killed: keyed(&oom, "oom_kill").unwrap_or(0) > 0,
                }
            }
        }
    }

    /// The pids still in the run's cgroup.
    pub fn members(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .procs_files()
            .into_iter()
            .flat_map(|f| {
                fs::read_to_string(f)
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Sets the run's memory limit (without swap), before its program starts.
    pub fn set_memory(&self, bytes: u64) -> Result<(), String> {
        let write = |path: PathBuf| {
            fs::write(&path, bytes.to_string()).map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        match &self.hierarchy {
            Hierarchy::V2 { base } => write(base.join(&self.name).join("memory.max")),
            Hierarchy::V1 { memory, .. } => {
                let dir = memory.join(&self.name);
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                if !memsw.exists() {
                    return write(dir.join("memory.limit_in_bytes"));
                }
                // The memory limit may never exceed memory + swap: lowered first, raised second.
                write(dir.join("memory.limit_in_bytes"))
                    .and_then(|()| write(memsw.clone()))
                    .or_else(|_| write(memsw).and_then(|()| write(dir.join("memory.limit_in_bytes"))))
            }
        }
    }

    /// Kills whatever is left in the cgroup and removes it. The run's processes normally died with
    /// its sandbox (a pid namespace ends with its first process); this is the backstop.
    pub async fn remove(self) -> Result<(), String> {
        for attempt in 0..REMOVE_ATTEMPTS {
            if self.try_remove() {
                return Ok(());
            }
            tokio::time::sleep(remove_pause(attempt)).await;
        }
        Err(self.left())
    }

    /// As [`RunGroup::remove`], blocking the thread while it waits (where nothing can be awaited:
    /// a sandbox dropped with sandboxes made ahead).
    pub fn remove_now(self) -> Result<(), String> {
        for attempt in 0..REMOVE_ATTEMPTS {
            if self.try_remove() {
                return Ok(());
            }
            std::thread::sleep(remove_pause(attempt));
        }
        Err(self.left())
    }

    /// Kills the cgroup's processes and removes its directories; true once they are gone.
    fn try_remove(&self) -> bool {
        if let Hierarchy::V2 { base } = &self.hierarchy {
            let kill = base.join(&self.name).join("cgroup.kill");
            if kill.exists() {
                let _ = fs::write(kill, "1");
            }
        }
        for pid in self.members() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        self.hierarchy
            .dirs(&self.name)
            .iter()
            .all(|d| match fs::remove_dir(d) {
                Ok(()) => true,
                Err(e) => e.kind() == io::ErrorKind::NotFound,
            })
    }

    fn left(&self) -> String {
        format!(
            "the cgroup of run {} could not be removed: processes {:?} are left",
            self.name,
            self.members()
        )
    }
}

/// Tries to remove a run's cgroup before giving up (about two seconds in all).
const REMOVE_ATTEMPTS: u32 = 200;

/// The pause after a failed try: the sandbox's last processes are usually gone within a
/// millisecond or two of its end, so short at first, then 10 ms.
fn remove_pause(attempt: u32) -> Duration {
    Duration::from_millis(1u64 << attempt.min(3)).min(Duration::from_millis(10))
}

#[derive(Debug)]
struct Mount {
    point: PathBuf,
    v2: bool,
    controllers: Vec<String>,
}

/// The cgroup file systems in a mountinfo text: v2 (`cgroup2`), and v1 with their controllers
/// (from the super options).
fn cgroup_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let point = before.split_whitespace().nth(4)?;
            let mut after = after.split_whitespace();
            let fstype = after.next()?;
            let _source = after.next()?;
            let options = after.next().unwrap_or("");
            let point = PathBuf::from(point.replace("\\040", " "));
            match fstype {
                "cgroup2" => Some(Mount {
                    point,
                    v2: true,
                    controllers: Vec::new(),
                }),
                "cgroup" => Some(Mount {
                    point,
                    v2: false,
                    controllers: options.split(',').map(str::to_owned).collect(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// This process's cgroup path from `/proc/self/cgroup`: the v2 line (`0::/path`) for `None`, the
/// line naming `controller` otherwise.
fn own_path(cgroup: &str, controller: Option<&str>) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = match controller {
            None => controllers.is_empty(),
            Some(c) => controllers.split(',').any(|x| x == c),
        };
        matches.then(|| path.to_owned())
    })
}

fn make_dir(dir: &Path) -> Result<(), String> {
    match fs::create_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("cannot create {}: {e}", dir.display())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
33 25 0:29 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
40 25 8:1 / / rw - ext4 /dev/sda1 rw";

    #[test]
    fn mounts_and_own_paths_are_read() {
        let mounts = cgroup_mounts(MOUNTINFO);
        assert_eq!(mounts.len(), 4);
        assert!(mounts[0].v2);
        assert_eq!(mounts[2].point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(mounts[2].controllers, ["rw", "cpu", "cpuacct"]);
        let own = "4:memory:/a/b\n2:cpu,cpuacct:/\n0::/user.slice/x.service\n";
        assert_eq!(own_path(own, Some("memory")).as_deref(), Some("/a/b"));
        assert_eq!(own_path(own, Some("cpuacct")).as_deref(), Some("/"));
        assert_eq!(own_path(own, None).as_deref(), Some("/user.slice/x.service"));
        assert_eq!(own_path(own, Some("pids")), None);
    }

    /// A cgroup v2 tree stands in as plain files: the node moves into its leaf, controllers are
    /// enabled, and a run's limits are written where the kernel reads them.
    #[test]
    fn a_v2_run_gets_its_limits_and_the_node_its_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path();
        fs::write(own.join("cgroup.controllers"), "cpuset cpu io memory pids").unwrap();
        fs::write(own.join("cgroup.procs"), "4242\n").unwrap();
        let h = Hierarchy::prepare_v2(own).unwrap();
        assert_eq!(
            fs::read_to_string(own.join("stacknet-node/cgroup.procs")).unwrap(),
            "4242"
        );
        assert_eq!(
            fs::read_to_string(own.join("cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu"
        );
        fs::create_dir_all(own.join("stacknet-sandbox/run-1")).unwrap();
        fs::write(own.join("stacknet-sandbox/run-1/memory.swap.max"), "max").unwrap();
        let limits = RunLimits {
            memory_bytes: 64 << 20,
            pids: 32,
            millicpus: 500,
        };
        let run = h.create("run-1", limits).unwrap();
        let read = |f: &str| fs::read_to_string(own.join("stacknet-sandbox/run-1").join(f)).unwrap();
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("pids.max"), "32");
        assert_eq!(read("cpu.max"), "50000 100000");
        fs::write(
            own.join("stacknet-sandbox/run-1/cpu.stat"),
            "usage_usec 2500000\nuser_usec 1\n",
        )
        .unwrap();
        fs::write(own.join("stacknet-sandbox/run-1/memory.peak"), "1048576\n").unwrap();
        fs::write(
            own.join("stacknet-sandbox/run-1/memory.events"),
            "low 0\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(
            run.stats(),
            RunStats {
                cpu_time_ms: 2500,
                memory_peak_bytes: Some(1 << 20),
                oom_killed: true
            }
        );
        assert_eq!(
            run.procs_files(),
            [own.join("stacknet-sandbox/run-1/cgroup.procs")]
        );
    }

    #[test]
    fn v2_without_the_controllers_says_which_are_missing() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), "hugetlb").unwrap();
        assert_eq!(
            Hierarchy::prepare_v2(dir.path()).unwrap_err(),
            "the controllers memory, pids, cpu are not available"
        );
    }
}
