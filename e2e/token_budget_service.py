"""A token-budget rate-limit service for Envoy's global rate-limit filter (the RLS gRPC API).

Each caller, named by the descriptor entry `client`, has a budget of tokens per run. Requests carry
two descriptors: `phase=check` when they arrive (refused with OVER_LIMIT once the budget is spent)
and `phase=charge` when the stream is done, with the tokens the gateway counted as `hits_addend`
(Envoy reads them from the filter state `wasm.ai_gateway.total_tokens`). It is a demo and a test
fixture: counters live in memory, and the budget never refills.

    python e2e/token_budget_service.py --listen 127.0.0.1:8081 --budget 1000
"""

import argparse
import threading
from concurrent import futures

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc


class TokenBudget(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(self, budget: int):
        self.budget = budget
        self.spent: dict[str, int] = {}
        self.lock = threading.Lock()

    def ShouldRateLimit(self, request, context):
        overall = rls_pb2.RateLimitResponse.OK
        statuses = []
        for descriptor in request.descriptors:
            entries = {entry.key: entry.value for entry in descriptor.entries}
            client, phase = entries.get("client", "anonymous"), entries.get("phase")
            hits = descriptor.hits_addend.value if descriptor.HasField("hits_addend") else request.hits_addend
            code = rls_pb2.RateLimitResponse.OK
            with self.lock:
                spent = self.spent.get(client, 0)
                if phase == "charge":
                    self.spent[client] = spent + hits
                elif spent >= self.budget:
                    code = rls_pb2.RateLimitResponse.OVER_LIMIT
                    overall = code
                remaining = max(self.budget - self.spent.get(client, 0), 0)
            statuses.append(rls_pb2.RateLimitResponse.DescriptorStatus(code=code, limit_remaining=remaining))
        return rls_pb2.RateLimitResponse(overall_code=overall, statuses=statuses)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8081")
    parser.add_argument("--budget", type=int, default=1000, help="tokens each client may spend")
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(TokenBudget(args.budget), server)
    server.add_insecure_port(args.listen)
    server.start()
    print(f"token budget service on {args.listen}, {args.budget} tokens per client", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
