#!/usr/bin/env python3
"""accllm-gateway under load: what the HTTP layer adds over calling the daemon directly.

  bench/gateway_bench.py [--streams 1000] [--tokens 32] [--build build] [--models ../shared/models]

1. Added time to first token at low load: the same greedy request, one at a time, alternately
   straight to the daemon (gRPC, Debian's python3-grpcio) and through the gateway (HTTP SSE);
   p50/p99 of each and of the difference.
2. N concurrent streaming requests through the gateway, then N straight to the daemon: how many
   completed, TTFT and end-to-end p50/p99, wall time, and the gateway's peak RSS and threads.

Both paths run in this one process, against one daemon on stories260K, so the figures compare.
Run with /usr/bin/python3 (Debian's grpcio).
"""
import argparse
import asyncio
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
from gateway_stack import GatewayStack  # noqa: E402


def pct(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


async def http_stream(port, body):
    """One streaming completion through the gateway: (ttft, total, completed)."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    payload = json.dumps(body).encode()
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    await writer.drain()
    ttft = None
    done = False
    while True:
        line = await reader.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            if line.startswith(b"data: [DONE]"):
                done = True
                break
            if ttft is None and b'"text":""' not in line:
                ttft = time.perf_counter() - start
    writer.close()
    return ttft, time.perf_counter() - start, done


async def grpc_stream(stub, pb, prompt, tokens):
    start = time.perf_counter()
    request = pb.GenerateRequest(text=prompt, max_new_tokens=tokens, ignore_eos=True)
    request.sampling.temperature = 0
    ttft = None
    done = False
    async for response in stub(request):
        if response.HasField("chunk") and ttft is None and response.chunk.text:
            ttft = time.perf_counter() - start
        if response.HasField("final"):
            done = True
    return ttft, time.perf_counter() - start, done


def report(name, results, wall):
    ttfts = [r[0] * 1e3 for r in results if r[0] is not None]
    totals = [r[1] * 1e3 for r in results]
    done = sum(1 for r in results if r[2])
    print(f"| {name} | {done}/{len(results)} | {pct(ttfts, 50):.2f} | {pct(ttfts, 99):.2f} | "
          f"{pct(totals, 50):.1f} | {pct(totals, 99):.1f} | {wall:.2f} |")


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    parser.add_argument("--models", default=os.environ.get("ACCLLM_MODELS_DIR", os.path.join(HERE, "..", "..", "shared", "models")))
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=200)
    args = parser.parse_args()
    sys.path.insert(0, os.path.join(args.build, "tests", "python_proto"))
    import grpc  # noqa: E402
    from accllm.v1 import generation_pb2 as pb  # noqa: E402

    server = os.path.join(args.build, "server", "accllm-server")
    gateway = os.path.join(args.build, "gateway", "accllm-gateway")
    body = {"model": "stories260K", "prompt": "Once upon a time", "max_tokens": args.tokens, "temperature": 0,
            "ignore_eos": True, "stream": True}
    server_args = ["--kv", "f32", "--max-running", "64", "--max-waiting", str(args.streams + 16)]
    with GatewayStack(server, gateway, os.path.join(args.models, "stories260K.bin"),
                      os.path.join(args.models, "tok512.bin"), server_args=server_args) as stack:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{stack.daemon_port}")
        stub = channel.unary_stream("/accllm.v1.Generation/Generate",
                                    request_serializer=pb.GenerateRequest.SerializeToString,
                                    response_deserializer=pb.GenerateResponse.FromString)
        # Warm both paths.
        for _ in range(5):
            await http_stream(stack.gateway_port, body)
            await grpc_stream(stub, pb, body["prompt"], args.tokens)

        # The daemon's own TTFT (arrival to first token, inside it) from its metrics: what a
        # client sees beyond it is the client, the transport and, through the gateway, the gateway.
        def daemon_ttft():
            return (stack.daemon_metric("accllm_time_to_first_token_seconds_sum"),
                    stack.daemon_metric("accllm_time_to_first_token_seconds_count"))

        async def sequential(run):
            before = daemon_ttft()
            seen = [(await run())[0] * 1e3 for _ in range(args.sequential)]
            after = daemon_ttft()
            inside = (after[0] - before[0]) / (after[1] - before[1]) * 1e3
            return seen, inside

        direct, direct_inside = await sequential(lambda: grpc_stream(stub, pb, body["prompt"], args.tokens))
        via, via_inside = await sequential(lambda: http_stream(stack.gateway_port, body))
        print(f"## Time to first token, one request at a time ({args.sequential} each, {args.tokens} tokens)\n")
        print("| path | client p50 ms | client p99 ms | client mean ms | inside the daemon, mean ms | beyond the daemon, mean ms |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, seen, inside in (("daemon (Python grpcio)", direct, direct_inside),
                                   ("gateway (Python asyncio HTTP)", via, via_inside)):
            print(f"| {name} | {pct(seen, 50):.3f} | {pct(seen, 99):.3f} | {statistics.mean(seen):.3f} | "
                  f"{inside:.3f} | {statistics.mean(seen) - inside:.3f} |")
        print()

        print(f"## {args.streams} concurrent streams, {args.tokens} tokens each\n")
        print("| path | completed | TTFT p50 ms | TTFT p99 ms | total p50 ms | total p99 ms | wall s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        peak = {"rss": 0, "threads": 0}
        stop = asyncio.Event()

        async def sample():
            while not stop.is_set():
                s = proc_status(stack.gateway_pid)
                peak["rss"] = max(peak["rss"], int(s["VmRSS"].split()[0]))
                peak["threads"] = max(peak["threads"], int(s["Threads"]))
                await asyncio.sleep(0.05)

        idle = proc_status(stack.gateway_pid)
        sampler = asyncio.create_task(sample())
        start = time.perf_counter()
        results = await asyncio.gather(*[http_stream(stack.gateway_port, body) for _ in range(args.streams)])
        report("gateway (HTTP SSE)", results, time.perf_counter() - start)
        stop.set()
        await sampler
        start = time.perf_counter()
        results = await asyncio.gather(*[grpc_stream(stub, pb, body["prompt"], args.tokens) for _ in range(args.streams)])
        report("daemon (gRPC)", results, time.perf_counter() - start)
        print(f"\ngateway process: RSS {int(idle['VmRSS'].split()[0]) / 1024:.1f} MiB idle, "
              f"{peak['rss'] / 1024:.1f} MiB peak; threads {idle['Threads']} idle, {peak['threads']} peak")
        await channel.close()


if __name__ == "__main__":
    asyncio.run(main())
