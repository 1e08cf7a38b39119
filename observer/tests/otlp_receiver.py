"""An OTLP/HTTP metrics receiver for the tests: decodes each request with the
official protobuf messages (PyPI `opentelemetry-proto`) and writes one JSON
line per data point to the file named by its argument. Prints "port N" (it
listens on 127.0.0.1, a free port), and answers every request as a collector
does."""

import gzip
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2


def attributes(kvs):
    out = {}
    for kv in kvs:
        value = MessageToDict(kv.value)
        out[kv.key] = next(iter(value.values())) if value else None
    return out


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = metrics_service_pb2.ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for resource_metrics in request.resource_metrics:
            resource = attributes(resource_metrics.resource.attributes)
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    data = getattr(metric, kind)
                    for point in data.data_points:
                        line = {
                            "path": self.path,
                            "content_type": self.headers.get("Content-Type"),
                            "resource": resource,
                            "scope": scope.scope.name,
                            "name": metric.name,
                            "unit": metric.unit,
                            "kind": kind,
                            "attributes": attributes(point.attributes),
                        }
                        if kind == "histogram":
                            line["count"] = point.count
                            line["sum"] = point.sum
                            line["bounds"] = list(point.explicit_bounds)
                            line["bucket_counts"] = list(point.bucket_counts)
                        else:
                            line["value"] = point.as_int if point.HasField("as_int") else point.as_double
                        if kind == "sum":
                            line["monotonic"] = data.is_monotonic
                            line["temporality"] = data.aggregation_temporality
                        OUT.write(json.dumps(line) + "\n")
                        OUT.flush()
        response = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(response)))
        self.end_headers()
        self.wfile.write(response)

    def log_message(self, *args):
        pass


OUT = open(sys.argv[1], "w")
server = HTTPServer(("127.0.0.1", 0), Receiver)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
