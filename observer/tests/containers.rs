//! A Go process in a container, as Kubernetes runs one: its own pid and mount
//! namespaces (`unshare`) and a cgroup whose path is containerd's under a
//! pod's slice. It is watched, and labelled with what it is.

mod common;

use std::{path::PathBuf, process::Command};

use common::{Fixture, Mode, Observer, build, toolchains, watch_to_the_end};

const CONTAINER_ID: &str = "4e1f0c2b9a7d6e5f4e1f0c2b9a7d6e5f4e1f0c2b9a7d6e5f4e1f0c2b9a7d6e5f";
const POD_UID: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

/// The cgroup (v2) of a containerd container in a burstable pod, systemd
/// driver; removed (with the slices made for it) when dropped.
struct ContainerCgroup(Vec<PathBuf>);

impl ContainerCgroup {
    fn create() -> Self {
        let root = PathBuf::from("/sys/fs/cgroup/unified");
        let root = if root.join("cgroup.procs").exists() {
            root
        } else {
            PathBuf::from("/sys/fs/cgroup")
        };
        let mut dirs = Vec::new();
        let mut dir = root;
        for part in [
            "kubepods.slice".to_owned(),
            "kubepods-burstable.slice".to_owned(),
            format!("kubepods-burstable-pod{}.slice", POD_UID.replace('-', "_")),
            format!("cri-containerd-{CONTAINER_ID}.scope"),
        ] {
            dir = dir.join(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("cannot create the cgroup {}: {e}", dir.display()));
                dirs.push(dir.clone());
            }
        }
        Self(dirs)
    }

    fn path(&self) -> &PathBuf {
        self.0.last().expect("the container's cgroup")
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The children of process `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn a_go_process_in_a_container_is_watched_and_labelled() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "cpu", Mode::Stripped);
    let cgroup = ContainerCgroup::create();
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(&binary)
        .args(["ratio", "500"]);
    let fixture = Fixture::spawn_command(command);
    // unshare forks the program into the new pid namespace.
    let pid = children(fixture.pid())
        .first()
        .copied()
        .expect("the program under unshare");
    std::fs::write(cgroup.path().join("cgroup.procs"), pid.to_string())
        .expect("move the program into the container's cgroup");
    let observer = Observer::attach(pid, &["--json", "--interval", "10s"]);
    let finished = watch_to_the_end(fixture, observer);
    let summary = finished.only("summary");
    let process = &summary["process"];
    assert_eq!(process["pid"], pid, "{process}");
    // The first process of its namespace.
    assert_eq!(process["pid_in_namespace"], 1, "{process}");
    assert_eq!(process["container_runtime"], "containerd", "{process}");
    assert_eq!(process["container_id"], CONTAINER_ID, "{process}");
    assert_eq!(process["pod_uid"], POD_UID, "{process}");
    assert_eq!(
        process["go_version"],
        toolchain.version.as_str(),
        "{process}"
    );
    // The kernel's command name: the file name, cut to 15 bytes.
    let name = binary.file_name().expect("a file").to_string_lossy();
    assert_eq!(process["comm"], &name[..name.len().min(15)], "{process}");
    assert_eq!(
        process["executable"],
        binary.to_string_lossy().as_ref(),
        "{process}"
    );
    // It was watched: its goroutines ran, and CPU samples named them.
    assert!(summary["run_slices"].as_u64().unwrap_or(0) > 0, "{summary}");
    assert!(
        summary["cpu"]["samples"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
}
