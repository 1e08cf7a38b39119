//! `--record FILE`: a Perfetto trace (protobuf, TrackEvent format) of the session,
//! to open in ui.perfetto.dev: a track per P and per M (thread) with a slice for
//! each goroutine run, syscall slices on the M tracks, instants for parks (with
//! the wait reason) and preemptions, counters for the run-queue lengths.
//!
//! With `--all`, every process records into one file: each is a process
//! track group of its own (its track ids offset by its pid, its packets on a
//! sequence of its own).
//!
//! The messages are Perfetto's own, generated from its `.proto` files by the
//! `perfetto_protos` crate: they cannot drift from the format. A file of
//! concatenated `Trace` messages is itself a `Trace`, so packets are appended as
//! they come, each as a one-packet `Trace`.

use std::{
    collections::{HashMap, HashSet},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result, bail};
use gobpf_sched_common::{Event, GoroutineStats, event_flags, event_kind};
use perfetto_protos::{
    counter_descriptor::CounterDescriptor,
    debug_annotation::DebugAnnotation,
    process_descriptor::ProcessDescriptor,
    thread_descriptor::ThreadDescriptor,
    trace::Trace,
    trace_packet::TracePacket,
    track_descriptor::TrackDescriptor,
    track_event::{TrackEvent, track_event::Type},
};
use protobuf::Message;
use tempfile::NamedTempFile;

use crate::{
    outputs::format::partial_file_beside,
    stats::{
        clock::read_clock,
        names::Names,
        sched::SchedState,
        signals::{Outcome, Preemption},
    },
};

const SLICE_BEGIN: Type = Type::TYPE_SLICE_BEGIN;
const SLICE_END: Type = Type::TYPE_SLICE_END;
const INSTANT: Type = Type::TYPE_INSTANT;
/// Track ids of a process: one process track, then ranges for P, M and
/// counter tracks (thread ids stay below 2^22), offset by `pid << PID_SHIFT`.
const PROCESS_TRACK: u64 = 1;
const GLOBAL_RUNQ_TRACK: u64 = 2;
const P_TRACKS: u64 = 1 << 20;
const P_RUNQ_TRACKS: u64 = 2 << 20;
const M_TRACKS: u64 = 1 << 32;
const PID_SHIFT: u32 = 34;

/// The file a recording goes to, shared by the recorders of every process.
#[derive(Clone)]
pub struct Recording {
    /// A new file beside the recording's path, renamed to it when complete: the
    /// path is never opened, so a link there is never followed, a FIFO never
    /// blocks, and an existing file is replaced only with --force. None once
    /// kept.
    out: Arc<Mutex<Option<BufWriter<NamedTempFile>>>>,
    path: PathBuf,
    replace: bool,
}

pub struct Recorder {
    recording: Recording,
    pid: u32,
    /// Added to the kernel's CLOCK_MONOTONIC stamps: Perfetto's default clock is
    /// CLOCK_BOOTTIME.
    boottime_minus_monotonic: i128,
    described: HashSet<u64>,
    /// Tracks with a run slice open.
    open: HashSet<u64>,
    /// What was written, for the session's report.
    pub run_slices: u64,
    pub syscall_slices: u64,
    pub parks: u64,
    pub preemptions: u64,
    /// Events of the current interval, written once the goroutines they name are
    /// known (their start functions come with the interval's snapshot).
    pending: Vec<Event>,
    pending_preemptions: Vec<Preemption>,
    m_of_tid: HashMap<u32, i64>,
}

impl Recording {
    /// Starts a recording that [`Recording::keep`] puts at `path`; an existing
    /// file there is replaced only when `replace`, and never one that is not a
    /// regular file (a symbolic link, FIFO, device or directory).
    pub fn create(path: &Path, replace: bool) -> Result<Self> {
        let shown = path.display();
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                bail!("will not record to {shown}: it is a symbolic link")
            }
            Ok(meta) if !meta.is_file() => bail!(
                "will not record to {shown}: it is not a regular file (a FIFO, device or \
                 directory)"
            ),
            Ok(_) if !replace => {
                bail!("{shown} exists: choose another name, or pass --force to replace it")
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create the recording {shown}"));
            }
        }
        let file = partial_file_beside(path, "the recording")?;
        Ok(Self {
            out: Arc::new(Mutex::new(Some(BufWriter::new(file)))),
            path: path.to_owned(),
            replace,
        })
    }

    /// Where the recording goes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Puts the finished recording at its path.
    pub fn keep(&self) -> Result<()> {
        let Some(out) = self.take() else {
            return Ok(()); // kept already
        };
        let file = out.into_inner().map_err(|e| e.into_error())?;
        persist(file, &self.path, self.replace)
    }

    /// Puts what could be written at the path, after a write failed.
    pub fn keep_incomplete(&self) -> Result<()> {
        let Some(out) = self.take() else {
            return Ok(());
        };
        let (file, _unwritten) = out.into_parts();
        persist(file, &self.path, self.replace)
    }

    fn take(&self) -> Option<BufWriter<NamedTempFile>> {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn write(&self, trace: &Trace) -> Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let Some(out) = out.as_mut() else {
            bail!("the recording {} was closed", self.path.display());
        };
        trace.write_to_writer(out)?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        if let Some(out) = self.out.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            out.flush()?;
        }
        Ok(())
    }
}

impl Recorder {
    /// Records process `pid` into `recording`: its process track, named
    /// `process_name`, and what it does from now on.
    pub fn new(recording: Recording, pid: u32, process_name: &str) -> Result<Self> {
        let mut recorder = Self {
            recording,
            pid,
            boottime_minus_monotonic: read_clock(libc::CLOCK_BOOTTIME) as i128
                - read_clock(libc::CLOCK_MONOTONIC) as i128,
            described: HashSet::new(),
            open: HashSet::new(),
            run_slices: 0,
            syscall_slices: 0,
            parks: 0,
            preemptions: 0,
            pending: Vec::new(),
            pending_preemptions: Vec::new(),
            m_of_tid: HashMap::new(),
        };
        let mut process = ProcessDescriptor::new();
        process.set_pid(pid as i32);
        process.set_process_name(process_name.to_owned());
        let mut descriptor = TrackDescriptor::new();
        let uuid = recorder.uuid(PROCESS_TRACK);
        descriptor.set_uuid(uuid);
        descriptor.process = Some(process).into();
        recorder.describe(uuid, descriptor)?;
        Ok(recorder)
    }

    /// The id of this process's track `local` (one of the constants above).
    fn uuid(&self, local: u64) -> u64 {
        (u64::from(self.pid) << PID_SHIFT) | local
    }

    /// Keeps a transition for the next [`Recorder::flush`].
    pub fn event(&mut self, event: &Event) {
        self.pending.push(*event);
    }

    /// Writes the transitions kept so far, naming goroutines by their start
    /// functions in `goroutines` (the latest snapshot).
    pub fn flush(
        &mut self,
        names: &Names<'_>,
        goroutines: &HashMap<u64, GoroutineStats>,
    ) -> Result<()> {
        let mut events = std::mem::take(&mut self.pending);
        events.sort_by_key(|e| e.ts_ns);
        // Run records say which M a thread is: known before its track is named.
        for event in events.iter().filter(|e| e.m_id >= 0) {
            self.m_of_tid.insert(event.tid, event.m_id);
        }
        for event in &events {
            self.write_event(event, names, goroutines)?;
        }
        for preemption in std::mem::take(&mut self.pending_preemptions) {
            self.write_preemption(&preemption)?;
        }
        self.recording.flush()?;
        Ok(())
    }

    // One arm per kind of transition: long, but each kind is drawn in one place.
    fn write_event(
        &mut self,
        event: &Event,
        names: &Names<'_>,
        goroutines: &HashMap<u64, GoroutineStats>,
    ) -> Result<()> {
        let m_track = self.m_track(event.tid)?;
        // A run slice is drawn on its thread's track and on its P's.
        let p_track = match event.kind {
            event_kind::RUN | event_kind::STOP if event.p_id >= 0 => {
                Some(self.p_track(event.p_id)?)
            }
            _ => None,
        };
        match event.kind {
            event_kind::RUN => {
                let start_function = goroutines
                    .get(&event.goid)
                    .filter(|g| g.start_pc != 0)
                    .and_then(|g| names.function(g.start_pc));
                let name = match start_function {
                    Some(function) => format!("g{} {function}", event.goid),
                    None => format!("g{}", event.goid),
                };
                for track in [Some(m_track), p_track].into_iter().flatten() {
                    if self.open.contains(&track) {
                        self.track_event(track, event.ts_ns, SLICE_END, None, vec![])?;
                    }
                    let annotations = vec![
                        annotation_uint("goid", event.goid),
                        annotation_uint("runq_latency_ns", event.value),
                    ];
                    self.track_event(
                        track,
                        event.ts_ns,
                        SLICE_BEGIN,
                        Some(name.clone()),
                        annotations,
                    )?;
                    self.open.insert(track);
                }
                self.run_slices += 1;
            }
            event_kind::STOP => {
                for track in [Some(m_track), p_track].into_iter().flatten() {
                    if self.open.remove(&track) {
                        self.track_event(track, event.ts_ns, SLICE_END, None, vec![])?;
                    }
                }
            }
            event_kind::SYSCALL => {
                let start = event.ts_ns.saturating_sub(event.value);
                let annotations = vec![annotation_uint("goid", event.goid)];
                self.track_event(
                    m_track,
                    start,
                    SLICE_BEGIN,
                    Some("syscall".to_owned()),
                    annotations,
                )?;
                self.track_event(m_track, event.ts_ns, SLICE_END, None, vec![])?;
                self.syscall_slices += 1;
            }
            event_kind::PARK => {
                let reason = names.reason(event.value);
                let annotations = vec![
                    annotation_uint("goid", event.goid),
                    annotation_string("reason", &reason),
                ];
                self.track_event(
                    m_track,
                    event.ts_ns,
                    INSTANT,
                    Some(format!("park: {reason}")),
                    annotations,
                )?;
                self.parks += 1;
            }
            // A preemption by a signal is drawn with its signal (write_preemption).
            event_kind::PREEMPTED if event.flags & event_flags::ASYNC == 0 => {
                let annotations = vec![annotation_uint("goid", event.goid)];
                self.track_event(
                    m_track,
                    event.ts_ns,
                    INSTANT,
                    Some(format!("stack-check-preempt g{}", event.goid)),
                    annotations,
                )?;
            }
            _ => {}
        }
        Ok(())
    }

    /// A SIGURG preemption, for the next [`Recorder::flush`].
    pub fn preemption(&mut self, preemption: &Preemption) {
        self.pending_preemptions.push(preemption.clone());
    }

    /// On the track of the thread the signal was sent to.
    fn write_preemption(&mut self, preemption: &Preemption) -> Result<()> {
        let track = self.m_track(preemption.tid)?;
        let mut annotations = vec![
            annotation_uint("goid", preemption.goid),
            annotation_uint("ran_ns", preemption.ran_ns),
        ];
        if let Some(function) = &preemption.landed_in {
            annotations.push(annotation_string("landed_in", function));
        }
        let name = match preemption.outcome {
            Outcome::Preempted => format!("preempt g{}", preemption.goid),
            Outcome::GcSuspended => format!("gc-stop g{}", preemption.goid),
            Outcome::NothingPreempted => "sigurg (nothing preempted)".to_owned(),
            Outcome::Unseen => "sigurg (outcome not seen)".to_owned(),
        };
        self.track_event(track, preemption.ts_ns, INSTANT, Some(name), annotations)?;
        if preemption.outcome == Outcome::Preempted {
            self.preemptions += 1;
        }
        Ok(())
    }

    /// Run-queue lengths at `ts_ns` (CLOCK_MONOTONIC).
    pub fn sched_state(&mut self, ts_ns: u64, state: &SchedState) -> Result<()> {
        let global = self.uuid(GLOBAL_RUNQ_TRACK);
        let process = self.uuid(PROCESS_TRACK);
        if !self.described.contains(&global) {
            self.describe(global, counter_track(global, process, "global runq"))?;
        }
        self.counter(global, ts_ns, i64::from(state.global_runq))?;
        for p in &state.procs {
            let track = self.uuid(P_RUNQ_TRACKS + p.id.max(0) as u64);
            if !self.described.contains(&track) {
                let name = format!("P{} runq", p.id);
                self.describe(track, counter_track(track, process, &name))?;
            }
            self.counter(track, ts_ns, i64::from(p.queued()))?;
        }
        Ok(())
    }

    /// An instant on the process track: the target exec'd `exe` (the recording
    /// ends with the image it began with).
    pub fn exec(&mut self, ts_ns: u64, exe: &str) -> Result<()> {
        let annotations = vec![annotation_string("exe", exe)];
        let name = Some(format!("exec {exe}"));
        self.track_event(self.uuid(PROCESS_TRACK), ts_ns, INSTANT, name, annotations)
    }

    /// The file it records into.
    pub fn recording(&self) -> &Recording {
        &self.recording
    }

    /// Closes the slices still open at `ts_ns` and flushes the file.
    pub fn finish(
        &mut self,
        ts_ns: u64,
        names: &Names<'_>,
        goroutines: &HashMap<u64, GoroutineStats>,
    ) -> Result<()> {
        self.flush(names, goroutines)?;
        let mut open: Vec<u64> = self.open.drain().collect();
        open.sort_unstable();
        for track in open {
            self.track_event(track, ts_ns, SLICE_END, None, vec![])?;
        }
        self.recording.flush()?;
        Ok(())
    }

    fn p_track(&mut self, p: i32) -> Result<u64> {
        let uuid = self.uuid(P_TRACKS + p as u64);
        if !self.described.contains(&uuid) {
            let mut descriptor = TrackDescriptor::new();
            descriptor.set_uuid(uuid);
            descriptor.set_name(format!("P{p}"));
            descriptor.set_parent_uuid(self.uuid(PROCESS_TRACK));
            self.describe(uuid, descriptor)?;
        }
        Ok(uuid)
    }

    fn m_track(&mut self, tid: u32) -> Result<u64> {
        let uuid = self.uuid(M_TRACKS + u64::from(tid));
        if !self.described.contains(&uuid) {
            let name = match self.m_of_tid.get(&tid) {
                Some(m) => format!("M{m} (thread {tid})"),
                None => format!("thread {tid}"),
            };
            let mut thread = ThreadDescriptor::new();
            thread.set_pid(self.pid as i32);
            thread.set_tid(tid as i32);
            thread.set_thread_name(name);
            let mut descriptor = TrackDescriptor::new();
            descriptor.set_uuid(uuid);
            descriptor.thread = Some(thread).into();
            self.describe(uuid, descriptor)?;
        }
        Ok(uuid)
    }

    fn describe(&mut self, uuid: u64, descriptor: TrackDescriptor) -> Result<()> {
        self.described.insert(uuid);
        let mut packet = TracePacket::new();
        packet.set_track_descriptor(descriptor);
        packet.set_trusted_packet_sequence_id(self.pid);
        self.packet(packet)
    }

    fn counter(&mut self, track: u64, ts_ns: u64, value: i64) -> Result<()> {
        let mut event = TrackEvent::new();
        event.set_type(Type::TYPE_COUNTER);
        event.set_track_uuid(track);
        event.set_counter_value(value);
        self.event_packet(ts_ns, event)
    }

    fn track_event(
        &mut self,
        track: u64,
        ts_ns: u64,
        kind: Type,
        name: Option<String>,
        debug_annotations: Vec<DebugAnnotation>,
    ) -> Result<()> {
        let mut event = TrackEvent::new();
        event.set_type(kind);
        event.set_track_uuid(track);
        if let Some(name) = name {
            event.set_name(name);
        }
        event.categories = vec!["scheduler".to_owned()];
        event.debug_annotations = debug_annotations;
        self.event_packet(ts_ns, event)
    }

    fn event_packet(&mut self, ts_ns: u64, event: TrackEvent) -> Result<()> {
        let mut packet = TracePacket::new();
        packet.set_timestamp(self.boottime(ts_ns));
        packet.set_trusted_packet_sequence_id(self.pid);
        packet.set_track_event(event);
        self.packet(packet)
    }

    fn boottime(&self, monotonic_ns: u64) -> u64 {
        (monotonic_ns as i128 + self.boottime_minus_monotonic).max(0) as u64
    }

    fn packet(&mut self, packet: TracePacket) -> Result<()> {
        let mut trace = Trace::new();
        trace.packet.push(packet);
        self.recording.write(&trace)
    }
}

/// Renames the temporary file to `path` (atomically; without `replace`, only if
/// nothing is there).
fn persist(file: NamedTempFile, path: &Path, replace: bool) -> Result<()> {
    let persisted = if replace {
        file.persist(path).map(drop)
    } else {
        file.persist_noclobber(path).map(drop)
    };
    persisted
        .map_err(|e| e.error)
        .with_context(|| format!("cannot save the recording as {}", path.display()))
}

/// A counter track under the process track `process`.
fn counter_track(uuid: u64, process: u64, name: &str) -> TrackDescriptor {
    let mut counter = CounterDescriptor::new();
    counter.set_unit_name("goroutines".to_owned());
    let mut descriptor = TrackDescriptor::new();
    descriptor.set_uuid(uuid);
    descriptor.set_name(name.to_owned());
    descriptor.set_parent_uuid(process);
    descriptor.counter = Some(counter).into();
    descriptor
}

fn annotation_uint(name: &str, value: u64) -> DebugAnnotation {
    let mut annotation = DebugAnnotation::new();
    annotation.set_name(name.to_owned());
    annotation.set_uint_value(value);
    annotation
}

fn annotation_string(name: &str, value: &str) -> DebugAnnotation {
    let mut annotation = DebugAnnotation::new();
    annotation.set_name(name.to_owned());
    annotation.set_string_value(value.to_owned());
    annotation
}
