"""A rate-limit service for Envoy's global rate-limit filter (the RLS gRPC API), for token budgets.

The limits come from the ratelimit.yaml that ai-gateway-render writes for a BackendTrafficPolicy
(envoyproxy/ratelimit's configuration format: a descriptor tree with `rate_limit: {unit,
requests_per_unit}`), and are counted in fixed windows of each limit's unit, so a budget refills
when its window ends. A descriptor's `hits_addend` is what it costs: the gateway sends 0 as a
request arrives (refused with OVER_LIMIT once the window's budget is spent) and the request's total
tokens when its stream is done. A demo and a test fixture: counts live in this process's memory;
production uses envoyproxy/ratelimit with Redis and the same file.

    python e2e/token_budget_service.py --config .run/gateway/ratelimit.yaml --listen 127.0.0.1:8081
"""

import argparse
import threading
import time
from concurrent import futures

import grpc
import yaml
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def find_limit(tree: list, entries: list) -> tuple | None:
    """(window seconds, allowance) of the most specific match for the entries, as envoyproxy/ratelimit
    matches them: each entry by key and value, or by key alone (one counter per value)."""
    level, found = tree, None
    for key, value in entries:
        node = next((d for d in level if d.get("key") == key and d.get("value") == value), None) \
            or next((d for d in level if d.get("key") == key and "value" not in d), None)
        if node is None:
            return None
        if "rate_limit" in node:
            found = node["rate_limit"]
        level = node.get("descriptors", [])
    if found is None:
        return None
    return UNIT_SECONDS[found["unit"].lower()], int(found["requests_per_unit"])


class TokenBudget(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(self, config: dict, clock=time.time):
        self.domain = config["domain"]
        self.tree = config.get("descriptors", [])
        self.clock = clock
        self.used: dict[tuple, int] = {}
        self.lock = threading.Lock()

    def ShouldRateLimit(self, request, context):
        overall = rls_pb2.RateLimitResponse.OK
        statuses = []
        for descriptor in request.descriptors:
            entries = [(entry.key, entry.value) for entry in descriptor.entries]
            limit = find_limit(self.tree, entries) if request.domain == self.domain else None
            if limit is None:
                statuses.append(rls_pb2.RateLimitResponse.DescriptorStatus(code=rls_pb2.RateLimitResponse.OK))
                continue
            window_seconds, allowance = limit
            # A descriptor's own hits_addend may be 0 (check only); an unset request-level one means 1.
            hits = descriptor.hits_addend.value if descriptor.HasField("hits_addend") else (request.hits_addend or 1)
            window = int(self.clock() // window_seconds)
            key = (tuple(entries), window_seconds, window)
            with self.lock:
                for old in [k for k in self.used if k[:2] == key[:2] and k[2] < window]:
                    del self.used[old]
                used = self.used.get(key, 0) + hits
                self.used[key] = used
            over = used >= allowance if hits == 0 else used > allowance
            code = rls_pb2.RateLimitResponse.OVER_LIMIT if over else rls_pb2.RateLimitResponse.OK
            if over:
                overall = code
            statuses.append(rls_pb2.RateLimitResponse.DescriptorStatus(code=code, limit_remaining=max(allowance - used, 0)))
        return rls_pb2.RateLimitResponse(overall_code=overall, statuses=statuses)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the ratelimit.yaml ai-gateway-render wrote")
    parser.add_argument("--listen", default="127.0.0.1:8081")
    args = parser.parse_args()
    with open(args.config) as file:
        config = yaml.safe_load(file)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(TokenBudget(config), server)
    server.add_insecure_port(args.listen)
    server.start()
    print(f"token budget service on {args.listen}, limits from {args.config}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
