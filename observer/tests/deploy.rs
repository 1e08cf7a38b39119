//! observer/deploy: the DaemonSet manifest checked against the Kubernetes API
//! schemas with `kubernetes-validate --strict` (PyPI, installed by `cargo
//! xtask setup`), its security settings and ports checked against what the
//! observer needs, and the Containerfile against what `cargo xtask dist`
//! builds. No cluster and no image build: neither a container registry nor a
//! cluster is reachable from the machines the tests run on.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

/// The first release with `securityContext.appArmorProfile`, and the newest
/// one kubernetes-validate bundles.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// What the container adds to an empty set (observer/deploy/daemonset.yaml
/// says why for each one).
const CAPABILITIES: [&str; 5] = [
    "BPF",
    "PERFMON",
    "SYS_ADMIN",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
];

fn manifest() -> PathBuf {
    Path::new(DEPLOY).join("daemonset.yaml")
}

fn pythonpath() -> String {
    std::env::var("GOBPF_SCHED_K8S_VALIDATE_PYTHONPATH").expect(
        "GOBPF_SCHED_K8S_VALIDATE_PYTHONPATH is not set: run the tests with `cargo xtask test`, \
         which installs kubernetes-validate from PyPI",
    )
}

fn python(args: &[&str], file: &Path) -> Output {
    Command::new("python3")
        .args(args)
        .arg(file)
        .env("PYTHONPATH", pythonpath())
        .output()
        .expect("python3")
}

/// `kubernetes-validate --strict` against every version in KUBERNETES_VERSIONS.
fn validate(file: &Path) -> Output {
    let mut args = vec!["-m", "kubernetes_validate", "--strict"];
    for version in KUBERNETES_VERSIONS {
        args.extend(["--kubernetes-version", version]);
    }
    python(&args, file)
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The manifest's documents, parsed by PyYAML (kubernetes-validate's own
/// parser) and handed over as JSON.
fn documents() -> Vec<Value> {
    let output = python(
        &[
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ],
        &manifest(),
    );
    assert!(output.status.success(), "PyYAML: {}", said(&output));
    serde_json::from_slice(&output.stdout).expect("PyYAML's JSON")
}

fn daemonset() -> Value {
    documents()
        .into_iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet in daemonset.yaml")
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("a list, not {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("a string, not {v}")))
        .collect()
}

#[test]
fn the_manifest_passes_strict_schema_validation() {
    let output = validate(&manifest());
    let said = said(&output);
    assert!(output.status.success(), "kubernetes-validate: {said}");
    for version in KUBERNETES_VERSIONS {
        let minor = version.trim_end_matches(".0");
        for resource in ["namespace/gobpf-sched", "daemonset/gobpf-sched"] {
            assert!(
                said.contains(&format!(
                    "passed for resource {resource} against version {minor}"
                )),
                "{resource} was not checked against {version}: {said}"
            );
        }
    }
}

/// The check above means something: a misspelt field (`hostPid`, which the
/// API server would silently drop, leaving the pod blind to the node's
/// processes) is rejected.
#[test]
fn a_misspelt_field_fails_validation() {
    let text = std::fs::read_to_string(manifest()).expect("daemonset.yaml");
    let misspelt = text.replace("hostPID:", "hostPid:");
    assert_ne!(misspelt, text, "daemonset.yaml sets no hostPID");
    let copy = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    std::fs::write(copy.path(), misspelt).expect("write the copy");
    let output = validate(copy.path());
    let said = said(&output);
    assert!(!output.status.success(), "hostPid was accepted: {said}");
    assert!(said.contains("'hostPid' was unexpected"), "{said}");
}

#[test]
fn the_pod_sees_the_node_with_only_the_capabilities_it_needs() {
    let daemonset = daemonset();
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(
        pod["hostPID"], true,
        "without hostPID, --all sees no process but itself"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    assert!(
        strings(&container["args"]).contains(&"--all"),
        "the agent must watch every Go process: {}",
        container["args"]
    );

    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    let added: BTreeSet<&str> = strings(&security["capabilities"]["add"])
        .into_iter()
        .collect();
    assert_eq!(added, CAPABILITIES.into_iter().collect());
    // Each capability is explained where it is granted: a comment line
    // starting `# CAP_NAME:`.
    let text = std::fs::read_to_string(manifest()).expect("daemonset.yaml");
    for capability in added {
        let explained = text
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("# CAP_{capability}:")));
        assert!(
            explained,
            "no `# CAP_{capability}: why` comment in daemonset.yaml"
        );
    }

    // tracefs comes from the host, so the observer never has to mount it.
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == "/sys/kernel/tracing")
        .expect("tracefs mounted at /sys/kernel/tracing");
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the tracefs volume");
    assert_eq!(volume["hostPath"]["path"], "/sys/kernel/tracing");
}

/// Prometheus is told to scrape the port the observer listens on, which is
/// the container's `metrics` port and the one the probes ask.
#[test]
fn the_scrape_annotations_name_the_port_the_observer_serves() {
    let daemonset = daemonset();
    let template = &daemonset["spec"]["template"];
    let container = &template["spec"]["containers"][0];
    let args = strings(&container["args"]);
    let listen: SocketAddr = args
        .iter()
        .position(|a| *a == "--prometheus")
        .and_then(|i| args.get(i + 1))
        .expect("--prometheus ADDRESS in the container's args")
        .parse()
        .expect("--prometheus takes an address");
    assert!(
        listen.ip().is_unspecified(),
        "{listen}: Prometheus scrapes the pod's address, not the loopback"
    );
    let port = listen.port();

    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    let ports = container["ports"].as_array().expect("ports");
    let metrics = ports
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a container port named metrics");
    assert_eq!(metrics["containerPort"], port);
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], "/metrics", "{probe}");
        assert!(
            get["port"] == "metrics" || get["port"] == port,
            "{probe} asks port {}",
            get["port"]
        );
    }
}

/// A version bump cannot leave the manifest pointing at the previous image.
#[test]
fn the_image_is_tagged_with_the_package_version() {
    let daemonset = daemonset();
    let image = daemonset["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("an image");
    let name = image.rsplit('/').next().unwrap_or(image);
    assert_eq!(
        name,
        format!("gobpf-sched:{}", env!("CARGO_PKG_VERSION")),
        "the image in daemonset.yaml"
    );
}

/// The Containerfile copies the package `cargo xtask dist` built (named by
/// `cargo xtask test` in GOBPF_SCHED_DEB), given the version as its build
/// argument.
#[test]
fn the_containerfile_copies_the_package_dist_builds() {
    let deb = std::env::var_os("GOBPF_SCHED_DEB").map(PathBuf::from).expect(
        "GOBPF_SCHED_DEB is not set: run the tests with `cargo xtask test`, which builds the packages",
    );
    assert!(deb.is_file(), "{} does not exist", deb.display());
    let text =
        std::fs::read_to_string(Path::new(DEPLOY).join("Containerfile")).expect("Containerfile");
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        instructions.iter().any(|l| l.starts_with("FROM ")),
        "no FROM in the Containerfile"
    );
    assert!(
        instructions.contains(&"ARG VERSION"),
        "the version is a build argument"
    );
    let copied: Vec<String> = instructions
        .iter()
        .filter_map(|l| l.strip_prefix("COPY "))
        .map(|l| {
            l.split_whitespace()
                .next()
                .unwrap_or_default()
                .replace("${VERSION}", env!("CARGO_PKG_VERSION"))
        })
        .collect();
    let built = deb.file_name().expect("a file name").to_string_lossy();
    assert_eq!(copied, [built.as_ref()], "what the Containerfile copies");
}
