//! `gobpf-sched attach` on real Go processes, built with every installed toolchain.
//! The fixture (tests/fixtures/scenario/scenario.go) runs on one P, which makes most counts
//! exact; the assertions say which.

mod common;

use std::{thread, time::Duration};

use common::{
    Fixture, Mode, Observer, build, count, full_matrix_toolchains, goids, goroutine,
    scenario::{self, assert_ponger_parks},
    toolchains, traced_run,
};

// The full attach check in every build mode, for the full-matrix toolchains.

#[test]
fn counts_are_exact_for_default_builds() {
    for toolchain in full_matrix_toolchains() {
        check_scenario(&toolchain, Mode::Default);
    }
}

#[test]
fn counts_are_exact_for_stripped_builds() {
    for toolchain in full_matrix_toolchains() {
        check_scenario(&toolchain, Mode::Stripped);
    }
}

#[test]
fn counts_are_exact_for_pie_builds() {
    for toolchain in full_matrix_toolchains() {
        check_scenario(&toolchain, Mode::Pie);
    }
}

#[test]
fn counts_are_exact_for_cgo_builds() {
    for toolchain in full_matrix_toolchains() {
        check_scenario(&toolchain, Mode::Cgo);
    }
}

/// Every other Go version, stripped (functions from .gopclntab, offsets and wait
/// reasons from the generated table: the path with the most to get wrong).
#[test]
fn counts_are_exact_on_every_go_version() {
    let full = full_matrix_toolchains();
    let others: Vec<_> = toolchains()
        .into_iter()
        .filter(|t| !full.iter().any(|f| f.go == t.go))
        .collect();
    for toolchain in others {
        check_scenario(&toolchain, Mode::Stripped);
    }
}

/// Runs the scenario fixture built in `mode`, traced and untraced: the output
/// is the same, the exit is seen, every count the program makes exact is
/// (common::scenario), and the intervals add up.
/// The transition probes of a program share one uprobe_multi link (the
/// kernel has them since 6.6; a window's close then waits for no global
/// lock); where the kernel has none (as `GOBPF_SCHED_NO_UPROBE_MULTI` makes
/// it here) each site gets a perf-event link, and the counts are as exact.
#[test]
fn transition_probes_share_a_uprobe_multi_link_per_program() {
    let toolchains = full_matrix_toolchains();
    let toolchain = toolchains.last().expect("a toolchain");
    let binary = build(toolchain, "scenario", Mode::Default);
    for forced_off in [false, true] {
        let v = format!(
            "{} uprobe_multi forced off: {forced_off}",
            toolchain.version
        );
        let env: &[(&str, &str)] = if forced_off {
            &[("GOBPF_SCHED_NO_UPROBE_MULTI", "1")]
        } else {
            &[]
        };
        let args = scenario::args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut fixture = Fixture::spawn(&binary, &args);
        let observer = Observer::attach_with_env(
            std::path::Path::new(common::observer_binary()),
            fixture.pid(),
            &["--json", "--interval", "200ms", "--top", "100000"],
            env,
        );
        // --exact: every probe is attached from the start.
        let links = uprobe_links(observer.child.id());
        let multi_sites: usize = links
            .iter()
            .filter(|(multi, _)| *multi)
            .map(|(_, sites)| sites)
            .sum();
        let perf_sites = links.iter().filter(|(multi, _)| !multi).count();
        assert_eq!(
            multi_sites + perf_sites,
            toolchain.expected_uprobes(),
            "{v}: {links:?}"
        );
        if forced_off {
            assert_eq!(multi_sites, 0, "{v}: {links:?}");
        } else {
            // sigtrampgo and preemptPark stay attached (perf-event links).
            assert_eq!(perf_sites, 2, "{v}: {links:?}");
            let multi_links = links.iter().filter(|(multi, _)| *multi).count();
            assert!(multi_links < multi_sites, "{v}: {links:?}");
        }
        fixture.start();
        let (status, output) = fixture.finish();
        assert!(status.success(), "{v}");
        let run = observer.wait();
        assert!(run.status.success(), "{v}: {}", run.stderr);
        // No note of a refusal: this kernel has uprobe_multi links.
        assert!(!run.stderr.contains("uprobe_multi"), "{v}: {}", run.stderr);
        let summary = run.only("summary");
        assert_eq!(count(&summary, "dropped"), 0, "{v}");
        assert_eq!(scenario::result_line(&output), scenario::expected_result());
        scenario::Watched::new(v, output, summary, run.json()).check_counts();
    }
}

/// The uprobe links process `pid` holds: (uprobe_multi, sites) for each,
/// from its descriptors' fdinfo.
fn uprobe_links(pid: u32) -> Vec<(bool, usize)> {
    let mut links = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(info) = std::fs::read_to_string(entry.unwrap().path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|line| Some(line.strip_prefix(name)?.trim().to_owned()))
        };
        match (
            field("link_type:").as_deref(),
            field("event_type:").as_deref(),
        ) {
            (Some("uprobe_multi"), _) => {
                let sites = field("uprobe_cnt:").and_then(|n| n.parse().ok()).unwrap();
                links.push((true, sites));
            }
            (Some("perf"), Some("uprobe")) => links.push((false, 1)),
            _ => {}
        }
    }
    links
}

fn check_scenario(toolchain: &common::Toolchain, mode: Mode) {
    let binary = build(toolchain, "scenario", mode);
    let args = scenario::args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The same program untraced, for comparing its output.
    let mut untraced = Fixture::spawn(&binary, &args);
    untraced.start();
    let (untraced_status, untraced_output) = untraced.finish();
    assert!(untraced_status.success());
    let v = format!("{} {mode:?}", toolchain.version);
    let (output, run, summary) = traced_run(
        &binary,
        &args,
        &["--json", "--interval", "200ms", "--top", "100000"],
        &v,
    );
    assert_eq!(summary["go_version"], toolchain.version.as_str());
    assert_eq!(
        scenario::result_line(&output),
        scenario::result_line(&untraced_output),
        "{v}: tracing changed the program's result"
    );
    assert_eq!(scenario::result_line(&output), scenario::expected_result());
    let stderr = &run.stderr;
    assert!(stderr.contains(&format!("process {} exited", fixture_pid_of(stderr))));
    let watched = scenario::Watched::new(v, output, summary, run.json());
    watched.check_counts();
    watched.intervals_add_up();
}

/// The pid from the "attached to process N" line.
fn fixture_pid_of(stderr: &str) -> u64 {
    let rest = stderr
        .split("attached to process ")
        .nth(1)
        .expect("attach line");
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// `--only` attaches the probes of what is watched, nothing else, and still counts
/// exactly: syscalls come from casgstatus before Go 1.26, from their own probes
/// after; preemptions need only the signal handler's probe, the preemption
/// functions' and the tracepoint.
#[test]
fn only_the_watched_facets_are_probed() {
    for toolchain in toolchains() {
        let v = &toolchain.version;
        let binary = build(&toolchain, "scenario", Mode::Default);
        let watch = |only: &str| {
            let mut fixture = Fixture::spawn(&binary, &["10", "100", "50", "200"]);
            let observer = Observer::attach(
                fixture.pid(),
                &["--only", only, "--json", "-v", "--top", "1000"],
            );
            fixture.start();
            let (status, output) = fixture.finish();
            assert!(status.success());
            let sites = probe_sites(&observer.stderr_lines);
            let run = observer.wait();
            assert!(run.status.success(), "{v}: {}", run.stderr);
            (sites, run, goids(&output))
        };

        let (sites, run, ids) = watch("syscalls");
        let functions: Vec<&str> = sites.iter().map(|s| s.0.as_str()).collect();
        if toolchain.minor() >= (1, 26) {
            assert_eq!(
                functions,
                [
                    "runtime.entersyscall",
                    "runtime.entersyscallblock",
                    "runtime.exitsyscall"
                ],
                "{v}"
            );
        } else {
            assert_eq!(functions, ["runtime.casgstatus"], "{v}");
        }
        assert!(!run.stderr.contains("SIGURG tracepoint"), "{v}");
        let summary = run.only("summary");
        assert_eq!(summary["watching"], serde_json::json!(["syscalls"]), "{v}");
        let writer = goroutine(&summary, ids["writer"]);
        assert_eq!(count(&writer, "syscalls"), 50, "{v}: {writer}");
        assert_eq!(count(&summary, "preemptions"), 0, "{v}");
        assert_eq!(count(&summary, "schedule"), 0, "{v}");

        let (sites, run, ids) = watch("preemptions");
        let functions: Vec<&str> = sites.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            functions,
            [
                "runtime.sigtrampgo",
                toolchain.preemption_function(),
                "runtime.goyield_m",
                "runtime.preemptPark"
            ],
            "{v}"
        );
        assert!(run.stderr.contains("SIGURG tracepoint"), "{v}");
        let summary = run.only("summary");
        assert_eq!(count(&summary, "syscalls"), 0, "{v}");
        assert_eq!(count(&summary, "gopark_total"), 0, "{v}");
        let preemptions: Vec<_> = run
            .json()
            .into_iter()
            .filter(|e| e["type"] == "preemption")
            .collect();
        assert_eq!(preemptions.len() as u64, count(&summary, "preemptions"));
        // Without casgstatus the preempted goroutine is not known from a run
        // start, but the handler's report says where the signal landed.
        assert!(
            preemptions
                .iter()
                .filter(|e| e["landed_goid"] == ids["spinner"] && e["landed_in"] == "main.burn")
                .count()
                >= 3,
            "{v}: {preemptions:?}"
        );
    }
}

#[test]
fn text_summary_names_reasons_and_preemptions() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "scenario", Mode::Default);
    let mut fixture = Fixture::spawn(&binary, &["20", "100", "50", "200"]);
    let observer = Observer::attach(fixture.pid(), &["--top", "3"]);
    fixture.start();
    let (status, output) = fixture.finish();
    assert!(status.success());
    let run = observer.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let text = run.stdout.join("\n");
    let spinner = goids(&output)["spinner"];
    // The spinner's P may move to another thread (M) under load: any tid will do.
    assert!(
        text.lines()
            .any(|l| l.contains(" PREEMPT tid ") && l.contains(&format!(" goid {spinner} m "))),
        "{text}"
    );
    let summary = text.split("=== SUMMARY").nth(1).expect("a SUMMARY block");
    let gopark = summary
        .lines()
        .find(|l| l.starts_with("gopark"))
        .expect("gopark line");
    assert!(gopark.contains("sleep 2"), "{gopark}"); // 20 sleepers (+ the scavenger)
    assert!(summary.lines().any(|l| l.starts_with("syscalls")));
    assert!(summary.contains("GOID"), "{summary}");
    assert!(summary.contains("run slice length"), "{summary}");
    assert!(
        summary
            .lines()
            .any(|l| l.starts_with("dropped") && l.trim_end().ends_with(" 0"))
    );
}

#[test]
fn interval_and_duration_end_the_session() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "scenario", Mode::Default);
    // Not started: the program waits on stdin the whole time.
    let fixture = Fixture::spawn(&binary, &[]);
    let observer = Observer::attach(
        fixture.pid(),
        &["--json", "--interval", "200ms", "--duration", "1100ms"],
    );
    let run = observer.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let intervals = run
        .json()
        .iter()
        .filter(|e| e["type"] == "interval")
        .count();
    assert!(
        (4..=6).contains(&intervals),
        "{intervals} intervals in 1.1 s"
    );
    let summary = run.only("summary");
    let duration = count(&summary, "duration_ns");
    assert!(
        (1_000_000_000..3_000_000_000).contains(&duration),
        "{duration}"
    );
    drop(fixture);
}

#[test]
fn ctrl_c_prints_the_summary_and_exits_zero() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "scenario", Mode::Default);
    let fixture = Fixture::spawn(&binary, &[]);
    let observer = Observer::attach(fixture.pid(), &["--json"]);
    thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(observer.child.id() as i32, libc::SIGINT) };
    let run = observer.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let summary = run.only("summary");
    assert_eq!(summary["go_version"], toolchain.version.as_str());
    assert!(count(&summary, "duration_ns") >= 300_000_000);
}

#[test]
fn kill_9_of_the_observer_leaves_no_uprobe_behind() {
    for toolchain in toolchains() {
        let binary = build(&toolchain, "scenario", Mode::Default);
        let mut fixture = Fixture::spawn(&binary, &["10", "100", "10", "100"]);
        let pid = fixture.pid();
        let mut observer = Observer::attach(pid, &["-v"]);
        let sites = probe_sites(&observer.stderr_lines);
        assert_eq!(
            sites.len(),
            toolchain.expected_uprobes(),
            "{:?}",
            observer.stderr_lines
        );
        // schedule is probed on the jbe after `cmp 0x10(%r14),%rsp`; casgstatus is
        // nosplit (no stack check): at its entry.
        let site = |function: &str| {
            let (_, offset, placement) = sites.iter().find(|s| s.0 == function).unwrap();
            (*offset, placement.clone())
        };
        assert_eq!(site("runtime.schedule"), (4, "StackCheckJump".to_owned()));
        assert_eq!(site("runtime.casgstatus"), (0, "Entry".to_owned()));
        // A uprobe is an int3 (0xcc) in the target's copy of the page.
        let addresses: Vec<u64> = sites
            .iter()
            .zip(function_addresses(&binary, &sites))
            .map(|((_, offset, _), start)| start + offset)
            .collect();
        assert_eq!(code_bytes(pid, &addresses), vec![0xcc; sites.len()]);
        observer.child.kill().unwrap(); // SIGKILL: no cleanup code runs
        observer.child.wait().unwrap();
        let mut bytes = code_bytes(pid, &addresses);
        for _ in 0..50 {
            if !bytes.contains(&0xcc) {
                break;
            }
            thread::sleep(Duration::from_millis(100));
            bytes = code_bytes(pid, &addresses);
        }
        assert!(
            !bytes.contains(&0xcc),
            "{}: uprobes left after kill -9: {bytes:x?}",
            toolchain.version
        );
        // The target runs on unharmed.
        fixture.start();
        let (status, output) = fixture.finish();
        assert!(status.success());
        assert!(output.contains("result "));
    }
}

/// (function, offset of the probe in it, placement) from `attach -v`.
fn probe_sites(stderr: &[String]) -> Vec<(String, u64, String)> {
    stderr
        .iter()
        .filter_map(|line| line.strip_prefix("gobpf-sched: uprobe on "))
        .map(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            // runtime.gopark (0x46dea0) +4 (StackCheckJump) at file offset 0x6dea4
            let offset = words[2].trim_start_matches('+').parse().unwrap();
            let placement = words[3].trim_matches(|c| c == '(' || c == ')').to_owned();
            (words[0].to_owned(), offset, placement)
        })
        .collect()
}

/// Link-time addresses of the functions, from the fixture's own symbol table.
fn function_addresses(binary: &std::path::Path, sites: &[(String, u64, String)]) -> Vec<u64> {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(binary).unwrap();
    let file = object::File::parse(&*data).unwrap();
    sites
        .iter()
        .map(|(name, _, _)| {
            file.symbols()
                .find(|s| s.name() == Ok(name.as_str()))
                .unwrap_or_else(|| panic!("{name}"))
                .address()
        })
        .collect()
}

/// The first byte at each address in the target's memory (non-PIE fixture).
fn code_bytes(pid: u32, addresses: &[u64]) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    addresses
        .iter()
        .map(|&address| {
            let mut byte = [0u8];
            mem.read_exact_at(&mut byte, address).unwrap();
            byte[0]
        })
        .collect()
}

/// Attaches to a started-but-waiting fixture and checks the counts a small run
/// makes exact (10 sleepers, 100 rounds, 10 writes).
fn check_small_run(fixture: Fixture, what: &str) {
    let (output, _, summary) =
        common::traced_fixture(fixture, &["--json", "--top", "100000"], what);
    let ids = goids(&output);
    assert_ponger_parks(&summary, ids["ponger"], 100, what);
    let writer = goroutine(&summary, ids["writer"]);
    assert_eq!(count(&writer, "syscalls"), 10, "{what}");
    assert_eq!(count(&summary, "offset_mismatches"), 0, "{what}");
}

const SMALL_RUN: [&str; 4] = ["10", "100", "10", "100"];

#[test]
fn deleted_replaced_and_other_namespace_binaries_still_attach() {
    let toolchain = full_matrix_toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "scenario", Mode::Default);
    let dir = std::env::temp_dir().join(format!("gobpf-sched-exe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Deleted after it started: /proc/PID/exe still opens it.
    let copy = dir.join("deleted");
    std::fs::copy(&binary, &copy).unwrap();
    let fixture = Fixture::spawn(&copy, &SMALL_RUN);
    std::fs::remove_file(&copy).unwrap();
    check_small_run(fixture, "deleted binary");

    // Replaced by another program (an upgrade in place): the old inode runs on.
    let copy = dir.join("replaced");
    std::fs::copy(&binary, &copy).unwrap();
    let fixture = Fixture::spawn(&copy, &SMALL_RUN);
    let other = dir.join("other");
    std::fs::copy("/bin/true", &other).unwrap();
    std::fs::rename(&other, &copy).unwrap();
    check_small_run(fixture, "replaced binary");

    // Started from a tmpfs only its own mount namespace sees (like a container).
    let mount_point = dir.join("mnt");
    std::fs::create_dir_all(&mount_point).unwrap();
    let mut command = std::process::Command::new("unshare");
    command.args(["--mount", "--propagation", "private", "sh", "-c"]);
    command.arg(format!(
        "mount -t tmpfs none {mnt} && cp {bin} {mnt}/scenario && exec {mnt}/scenario {args}",
        mnt = mount_point.display(),
        bin = binary.display(),
        args = SMALL_RUN.join(" ")
    ));
    let fixture = Fixture::spawn_command(command);
    assert!(
        std::fs::read_dir(&mount_point).unwrap().next().is_none(),
        "the binary must not be visible outside its namespace"
    );
    check_small_run(fixture, "binary in another mount namespace");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The harm fixture's checksum line.
fn checksum(output: &str) -> String {
    output
        .lines()
        .find(|l| l.starts_with("checksum "))
        .unwrap_or_else(|| panic!("no checksum in {output}"))
        .to_owned()
}

/// Tracing never changes what a program computes: same checksum untraced,
/// traced to the end, and with the observer killed with SIGKILL mid-run.
#[test]
fn tracing_never_changes_what_the_program_computes() {
    const ROUNDS: &str = "300";
    for toolchain in full_matrix_toolchains() {
        for mode in [Mode::Default, Mode::Stripped, Mode::Pie] {
            let v = format!("{} {mode:?}", toolchain.version);
            let binary = build(&toolchain, "harm", mode);

            let mut untraced = Fixture::spawn(&binary, &[ROUNDS]);
            untraced.start();
            let (status, output) = untraced.finish();
            assert!(status.success(), "{v}: untraced run failed");
            let expected = checksum(&output);

            let mut traced = Fixture::spawn(&binary, &[ROUNDS]);
            let observer = Observer::attach(traced.pid(), &["--json"]);
            traced.start();
            let (status, output) = traced.finish();
            assert!(status.success(), "{v}: traced run failed");
            assert_eq!(
                checksum(&output),
                expected,
                "{v}: tracing changed the result"
            );
            let run = observer.wait();
            assert!(run.status.success(), "{v}: {}", run.stderr);
            let summary = run.only("summary");
            assert!(count(&summary, "schedule") > 10_000, "{v}: {summary}");
            assert_eq!(count(&summary, "dropped"), 0, "{v}");

            let mut killed = Fixture::spawn(&binary, &[ROUNDS]);
            let mut observer = Observer::attach(killed.pid(), &["--json"]);
            killed.start();
            thread::sleep(Duration::from_millis(200));
            observer.child.kill().unwrap(); // SIGKILL mid-run
            observer.child.wait().unwrap();
            let (status, output) = killed.finish();
            assert!(status.success(), "{v}: run with a killed observer failed");
            assert_eq!(
                checksum(&output),
                expected,
                "{v}: killing the observer changed the result"
            );
        }
    }
}

/// `--events` prints every transition, and exactly as many as the counters saw.
#[test]
fn events_mode_prints_every_transition() {
    for toolchain in full_matrix_toolchains() {
        let v = toolchain.version.clone();
        let binary = build(&toolchain, "scenario", Mode::Default);
        let (output, run, summary) = traced_run(
            &binary,
            &["50", "500", "100", "100"],
            &["--events", "--json"],
            &v,
        );
        let events: Vec<_> = run
            .json()
            .into_iter()
            .filter(|e| e["type"] == "event")
            .collect();
        let number = |kind: &str| events.iter().filter(|e| e["event"] == kind).count() as u64;
        assert_eq!(number("run"), count(&summary, "run_slices"), "{v}: run");
        assert_eq!(number("park"), count(&summary, "gopark_total"), "{v}: park");
        assert_eq!(
            number("create"),
            count(&summary, "goroutines_created"),
            "{v}: create"
        );
        assert_eq!(
            number("exit"),
            count(&summary, "goroutines_exited"),
            "{v}: exit"
        );
        assert_eq!(
            number("syscall"),
            count(&summary, "syscalls"),
            "{v}: syscall"
        );
        // Parks carry the binary's reason names: the 50 sleepers' among them.
        let writer = goids(&output)["writer"];
        let sleeps = events
            .iter()
            .filter(|e| e["event"] == "park" && e["reason"] == "sleep")
            .count();
        assert!(sleeps >= 50, "{v}: {sleeps} sleep parks");
        let writer_syscalls = events
            .iter()
            .filter(|e| e["event"] == "syscall" && e["goid"] == writer)
            .count();
        assert_eq!(writer_syscalls, 100, "{v}: the writer's syscalls");
    }
}
