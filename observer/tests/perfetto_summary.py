"""Reads a gobpf-sched --record file with the Trace proto of the `perfetto` PyPI
package and prints what it holds as JSON: per track, its name and kind, the
slices begun on it (count and a few names), its instants by name prefix, its
counter values, its parent track and (process and thread tracks) its pid. The integration tests compare that with the observer's own
counters."""
import collections
import json
import sys

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

trace = pb.Trace()
with open(sys.argv[1], "rb") as f:
    trace.ParseFromString(f.read())

tracks = {}
for packet in trace.packet:
    if packet.HasField("track_descriptor"):
        d = packet.track_descriptor
        if d.HasField("thread"):
            tracks[d.uuid] = {"name": d.thread.thread_name, "kind": "thread", "pid": d.thread.pid}
        elif d.HasField("process"):
            tracks[d.uuid] = {"name": d.process.process_name, "kind": "process", "pid": d.process.pid}
        elif d.HasField("counter"):
            tracks[d.uuid] = {"name": d.name, "kind": "counter"}
        else:
            tracks[d.uuid] = {"name": d.name, "kind": "track"}
        tracks[d.uuid]["parent"] = d.parent_uuid

stats = collections.defaultdict(lambda: {"begins": 0, "ends": 0, "begin_names": collections.Counter(),
                                          "instants": collections.Counter(), "counters": 0})
for packet in trace.packet:
    if not packet.HasField("track_event"):
        continue
    e = packet.track_event
    s = stats[e.track_uuid]
    if e.type == pb.TrackEvent.TYPE_SLICE_BEGIN:
        s["begins"] += 1
        s["begin_names"][e.name] += 1
    elif e.type == pb.TrackEvent.TYPE_SLICE_END:
        s["ends"] += 1
    elif e.type == pb.TrackEvent.TYPE_INSTANT:
        s["instants"][e.name.split(" ")[0]] += 1
    elif e.type == pb.TrackEvent.TYPE_COUNTER:
        s["counters"] += 1

out = []
for uuid, track in tracks.items():
    s = stats[uuid]
    out.append({
        "uuid": uuid,
        "name": track["name"],
        "kind": track["kind"],
        "begins": s["begins"],
        "ends": s["ends"],
        "syscalls": s["begin_names"]["syscall"],
        "begin_names": sorted(s["begin_names"]),
        "instants": dict(s["instants"]),
        "counters": s["counters"],
        "pid": track.get("pid"),
        "parent": track["parent"],
    })
print(json.dumps({"packets": len(trace.packet), "tracks": out}))
