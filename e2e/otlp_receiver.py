"""An OpenTelemetry trace receiver (OTLP over gRPC) that keeps the spans it gets, for the tracing
tests and `make run EXAMPLE=tracing`, which prints each span as a line of JSON.

    python e2e/otlp_receiver.py --listen 127.0.0.1:4317
"""

import argparse
import json
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


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


class Receiver:
    """Serves OTLP's TraceService/Export on `listen` and keeps every span."""

    def __init__(self, listen: str, on_span=None):
        self.spans, self.lock, self.on_span = [], threading.Lock(), on_span
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.unary_unary_rpc_method_handler(
            self.export,
            request_deserializer=trace_service_pb2.ExportTraceServiceRequest.FromString,
            response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
        )
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Export": handler})])
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
    receiver = Receiver(args.listen, on_span=lambda span: print(json.dumps(span), flush=True)).start()
    print(f"otlp receiver: listening on {args.listen}", flush=True)
    receiver.server.wait_for_termination()


if __name__ == "__main__":
    main()
