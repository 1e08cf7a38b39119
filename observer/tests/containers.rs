//! A Go process in a container, as Kubernetes runs one: its own pid and mount
//! namespaces (`unshare`) and a cgroup whose path is containerd's under a
//! pod's slice. It is watched, and labelled with what it is.

mod common;

use common::{
    ContainerCgroup, Mode, Observer, build, spawn_in_namespaces, toolchains, watch_to_the_end,
};

const CONTAINER_ID: &str = "4e1f0c2b9a7d6e5f4e1f0c2b9a7d6e5f4e1f0c2b9a7d6e5f4e1f0c2b9a7d6e5f";
const POD_UID: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

#[test]
fn a_go_process_in_a_container_is_watched_and_labelled() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "cpu", Mode::Stripped);
    let cgroup = ContainerCgroup::create(CONTAINER_ID, POD_UID);
    let (fixture, pid) = spawn_in_namespaces(&binary, &["ratio", "500"]);
    cgroup.add(pid);
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
