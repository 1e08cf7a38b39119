//! What a process is, for labels: its pid as seen from here and inside its
//! own pid namespace, its command name and executable, and — read from its
//! cgroup path (`/proc/PID/cgroup`) — the container it runs in and the
//! Kubernetes pod, for the common container runtimes:
//!
//! | runtime | cgroup path element (systemd driver / cgroupfs driver) |
//! |---|---|
//! | containerd (CRI) | `cri-containerd-ID.scope` / `…/podUID/ID` |
//! | CRI-O | `crio-ID.scope` / `…/crio-ID` |
//! | Docker | `docker-ID.scope` / `/docker/ID` |
//! | podman | `libpod-ID.scope` / `…/libpod-ID` |
//!
//! (ID: 64 hex digits; the `*-conmon-*` scopes of CRI-O and podman are the
//! monitors, not the container.) The pod uid comes from the kubepods part:
//! `kubepods-burstable-podUID.slice` (systemd, `_` for `-`) or `podUID`
//! (cgroupfs). Pod and namespace *names* need the Kubernetes API and are not
//! read here.

use serde::Serialize;

/// A process's labels.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ProcessLabels {
    pub pid: u32,
    /// Its pid inside its own pid namespace (a container's), when that is
    /// not ours.
    pub pid_in_namespace: Option<u32>,
    pub comm: String,
    pub executable: String,
    pub go_version: String,
    /// The container runtime and the container id (64 hex digits).
    pub container_runtime: Option<String>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
}

impl ProcessLabels {
    /// Reads what /proc says of `pid`; what cannot be read is left out.
    pub fn read(pid: u32, executable: &str, go_version: &str) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
        };
        // NSpid: the pid in each nested namespace, ours first, its own last.
        let pid_in_namespace = field("NSpid:")
            .and_then(|ids| ids.split_whitespace().last())
            .and_then(|id| id.parse().ok())
            .filter(|&id| id != pid);
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let container = container_of(&cgroup);
        Self {
            pid,
            pid_in_namespace,
            comm: field("Name:").unwrap_or_default().to_owned(),
            executable: executable.to_owned(),
            go_version: go_version.to_owned(),
            container_runtime: container.runtime.map(str::to_owned),
            container_id: container.id,
            pod_uid: container.pod_uid,
        }
    }

    /// `container containerd:0123456789ab pod 1b4e…` for text, or "".
    pub fn container_text(&self) -> String {
        let mut text = String::new();
        if let (Some(runtime), Some(id)) = (&self.container_runtime, &self.container_id) {
            text.push_str(&format!(" container {runtime}:{}", &id[..id.len().min(12)]));
        }
        if let Some(pod) = &self.pod_uid {
            text.push_str(&format!(" pod {pod}"));
        }
        if let Some(pid) = self.pid_in_namespace {
            text.push_str(&format!(" (pid {pid} inside)"));
        }
        text
    }
}

/// The container and pod of a cgroup file's paths.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Container {
    pub runtime: Option<&'static str>,
    pub id: Option<String>,
    pub pod_uid: Option<String>,
}

/// Container runtimes by the prefix of their scope (systemd) or directory
/// (cgroupfs) names, before the 64-hex-digit id.
const RUNTIMES: &[(&str, &str)] = &[
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("docker-", "docker"),
    ("libpod-", "podman"),
];

/// The container and pod named by the paths of `/proc/PID/cgroup` (any
/// hierarchy: v1 or v2).
pub fn container_of(cgroup: &str) -> Container {
    let mut found = Container::default();
    for line in cgroup.lines() {
        // hierarchy-ID:controllers:path
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for (index, part) in parts.iter().enumerate() {
            let part = part.strip_suffix(".scope").unwrap_or(part);
            if found.id.is_none() {
                found.runtime_and_id(part, index.checked_sub(1).map(|i| parts[i]));
            }
            if found.pod_uid.is_none() {
                found.pod_uid = pod_uid(part);
            }
        }
    }
    found
}

impl Container {
    /// `part` of a cgroup path, after `parent` (the element before it).
    fn runtime_and_id(&mut self, part: &str, parent: Option<&str>) {
        for &(prefix, runtime) in RUNTIMES {
            if let Some(id) = part.strip_prefix(prefix)
                && is_container_id(id)
            {
                self.runtime = Some(runtime);
                self.id = Some(id.to_owned());
                return;
            }
        }
        // cgroupfs: the bare id, under `docker` or a pod's directory.
        if is_container_id(part) {
            self.runtime = match parent {
                Some("docker") => Some("docker"),
                Some(p) if pod_uid(p).is_some() => Some("containerd"),
                _ => None,
            };
            if self.runtime.is_some() {
                self.id = Some(part.to_owned());
            }
        }
    }
}

fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `kubepods-burstable-pod<uid>.slice` or `pod<uid>`: the uid (dashes).
fn pod_uid(part: &str) -> Option<String> {
    let part = part.strip_suffix(".slice").unwrap_or(part);
    let at = part.rfind("pod")?;
    if at > 0 && !part[..at].ends_with('-') {
        return None;
    }
    let uid = part[at + 3..].replace('_', "-");
    let shape = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    shape.then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const POD: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

    #[test]
    fn each_runtime_is_named_from_its_cgroup_path() {
        let systemd_pod = POD.replace('-', "_");
        for (path, runtime, pod) in [
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{systemd_pod}.slice/cri-containerd-{ID}.scope"
                ),
                "containerd",
                true,
            ),
            (
                format!("/kubepods/besteffort/pod{POD}/{ID}"),
                "containerd",
                true,
            ),
            (
                format!("/kubepods.slice/kubepods-pod{systemd_pod}.slice/crio-{ID}.scope"),
                "cri-o",
                true,
            ),
            (format!("/system.slice/docker-{ID}.scope"), "docker", false),
            (format!("/docker/{ID}"), "docker", false),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                "podman",
                false,
            ),
        ] {
            let found = container_of(&format!("0::{path}\n"));
            assert_eq!(found.runtime, Some(runtime), "{path}");
            assert_eq!(found.id.as_deref(), Some(ID), "{path}");
            assert_eq!(found.pod_uid.as_deref(), pod.then_some(POD), "{path}");
        }
    }

    #[test]
    fn monitors_and_plain_hosts_are_no_containers() {
        for path in [
            "/".to_owned(),
            "/user.slice/user-0.slice/session-1.scope".to_owned(),
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            format!("/system.slice/crio-conmon-{ID}.scope"),
            format!("/some/{ID}"),
        ] {
            assert_eq!(
                container_of(&format!("0::{path}\n")),
                Container::default(),
                "{path}"
            );
        }
    }
}
