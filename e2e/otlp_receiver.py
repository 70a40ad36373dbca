"""An OpenTelemetry receiver (OTLP over gRPC, traces and metrics) that keeps what it gets, for the
telemetry tests and `make run EXAMPLE=tracing`, which prints each span, and each gateway metric
whose value changed, as a line of JSON.

    python e2e/otlp_receiver.py --listen 127.0.0.1:4317
"""

import argparse
import json
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"


def attribute_value(value):
    """An OTLP AnyValue as Python: ints stay ints, as the span typed them."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [attribute_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def span_record(resource, span) -> dict:
    return {
        "service": next((attribute_value(a.value) for a in resource.attributes if a.key == "service.name"), None),
        "name": span.name,
        "kind": span.kind,
        "trace_id": span.trace_id.hex(),
        "attributes": {a.key: attribute_value(a.value) for a in span.attributes},
    }


def metric_records(metric) -> list:
    """One record per data point of an OTLP metric: its name, kind, attributes and value."""
    kind = metric.WhichOneof("data")
    records = []
    for point in getattr(metric, kind).data_points if kind else []:
        record = {"name": metric.name, "kind": kind,
                  "attributes": {a.key: attribute_value(a.value) for a in point.attributes}}
        if kind == "histogram":
            record.update(count=point.count, sum=point.sum)
        else:
            record["value"] = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
        records.append(record)
    return records


class Receiver:
    """Serves OTLP's TraceService/Export and MetricsService/Export on `listen`: keeps every span,
    and the latest data point of each metric series."""

    def __init__(self, listen: str, on_span=None, on_metric=None):
        self.spans, self.lock, self.on_span, self.on_metric = [], threading.Lock(), on_span, on_metric
        self.metrics = {}
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.unary_unary_rpc_method_handler(
            self.export,
            request_deserializer=trace_service_pb2.ExportTraceServiceRequest.FromString,
            response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
        )
        metrics_handler = grpc.unary_unary_rpc_method_handler(
            self.export_metrics,
            request_deserializer=metrics_service_pb2.ExportMetricsServiceRequest.FromString,
            response_serializer=metrics_service_pb2.ExportMetricsServiceResponse.SerializeToString,
        )
        self.server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),
            grpc.method_handlers_generic_handler(METRICS_SERVICE, {"Export": metrics_handler}),
        ])
        self.port = self.server.add_insecure_port(listen)

    def export(self, request, context):
        for resource_spans in request.resource_spans:
            # xds-protos carries an older copy of OTLP's protos, where field 2 (today's scope_spans,
            # the same on the wire) is named instrumentation_library_spans.
            scopes = getattr(resource_spans, "scope_spans", None) or resource_spans.instrumentation_library_spans
            for scope_spans in scopes:
                for span in scope_spans.spans:
                    record = span_record(resource_spans.resource, span)
                    with self.lock:
                        self.spans.append(record)
                    if self.on_span:
                        self.on_span(record)
        return trace_service_pb2.ExportTraceServiceResponse()

    def export_metrics(self, request, context):
        for resource_metrics in request.resource_metrics:
            scopes = getattr(resource_metrics, "scope_metrics", None) or resource_metrics.instrumentation_library_metrics
            for scope_metrics in scopes:
                for metric in scope_metrics.metrics:
                    for record in metric_records(metric):
                        key = (record["name"], tuple(sorted(record["attributes"].items())))
                        with self.lock:
                            changed = self.metrics.get(key) != record
                            self.metrics[key] = record
                        if changed and self.on_metric:
                            self.on_metric(record)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def metric_points(self, name: str) -> list:
        """The latest data point of each series of metric `name`."""
        with self.lock:
            return [record for (metric, _), record in self.metrics.items() if metric == name]

    def start(self):
        self.server.start()
        return self

    def stop(self):
        self.server.stop(grace=None)

    def received(self) -> list:
        with self.lock:
            return list(self.spans)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:4317")
    args = parser.parse_args()
    show = lambda record: print(json.dumps(record), flush=True)  # noqa: E731
    # Envoy pushes every stat at each flush: only the gateway's own metrics are shown, as they change.
    gateway_metric = lambda record: record["name"].startswith(("gen_ai.", "ai_gateway.")) and show(record)  # noqa: E731
    receiver = Receiver(args.listen, on_span=show, on_metric=gateway_metric).start()
    print(f"otlp receiver: listening on {args.listen}", flush=True)
    receiver.server.wait_for_termination()


if __name__ == "__main__":
    main()
