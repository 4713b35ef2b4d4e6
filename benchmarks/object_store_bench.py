#!/usr/bin/env python3
"""Object storage throughput, in one run (docs/object-storage.md, docs/performance.md):

1. nginx on 127.0.0.1 serves a generated checkpoint (`warpload gen`, 2 GiB in 4 shards by
   default). The ceiling: N parallel `curl -o /dev/null` processes, each downloading its
   contiguous 1/N of the same bytes with ranged GETs (N = --connections). Then
   `warpload load INDEX_URL --json` with the same N connections (a settings file with
   "http": {"connections": N, "request_size": R}). Prints both and the ratio, and the host
   peak RSS of the load against its bytes.
2. s3rver on 127.0.0.1 holds a (smaller, --s3-size) checkpoint: boto3 `get_object` of each
   shard + `torch.frombuffer`, against `warpload.load_file(s3://...)`; prints the ratio.

    PYTHONPATH=build/python /usr/bin/python3 benchmarks/object_store_bench.py \\
        --warpload build/warpload --work /tmp/objbench

Best of --runs per row. Before each measured run a few GiB are touched and freed (this VM
returns free memory to its host and the first touch after that is slow; docs/performance.md);
before each `warpload load URL`, an untimed local load of the same files (`--backend posix`,
from the page cache) frees 2 GiB of the allocator's huge pages moments before.
Throughput in GB/s (10^9 bytes per second). Loopback only; nothing leaves the machine.
"""

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS_PY = os.path.join(HERE, "..", "tests", "object_store", "servers.py")


def servers_module():
    spec = importlib.util.spec_from_file_location("object_store_servers", SERVERS_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def touch_and_free(gib):
    """Faults in `gib` GiB of anonymous memory and frees it, so that the next first touch is
    fast (the VM hands free pages back to its host). In a child process: Linux keeps the
    largest RSS across fork and exec, and the CLI's reported peak RSS must be its own."""
    code = ("import mmap\n"
            f"size = {gib} << 30\n"
            "m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
            "for off in range(0, size, 4096):\n"
            "    m[off] = 1\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def shards_of(directory):
    return sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))


def curl_ceiling(base, directory, connections, extra=(), sink=None):
    """N curl processes, each fetching its contiguous 1/N of the concatenated shards into
    /dev/null, or with `sink` (a tmpfs folder) into files there: the same bytes written to
    fresh memory, as a load must."""
    files = [(f, os.path.getsize(os.path.join(directory, f))) for f in shards_of(directory)]
    total = sum(size for _, size in files)
    per = math.ceil(total / connections)
    cmds = []
    for c in range(connections):
        begin, end = c * per, min(total, (c + 1) * per)
        args = ["curl", "-s", "--fail", "--noproxy", "*", *extra]
        at = 0
        first = True
        for name, size in files:
            lo, hi = max(begin, at), min(end, at + size)
            if lo < hi:
                if not first:
                    args.append("--next")
                out = os.path.join(sink, f"{c}-{name}") if sink else os.devnull
                args += ["-r", f"{lo - at}-{hi - at - 1}", "-o", out, f"{base}/{name}"]
                args += list(extra)
                first = False
            at += size
        if not first:
            cmds.append(args)
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd) for cmd in cmds]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"curl failed: {p.args}")
    seconds = time.perf_counter() - start
    if sink:
        for f in os.listdir(sink):
            os.remove(os.path.join(sink, f))
    return total / seconds / 1e9


def warpload_load(cli, url, config):
    out = subprocess.run([cli, "load", url, "--json", "--config", config], check=True,
                         capture_output=True, text=True).stdout
    result = json.loads(out)
    return result


def boto3_load(endpoint, bucket, keys):
    import boto3
    import torch
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="S3RVER",
                      aws_secret_access_key="S3RVER", region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
    start = time.perf_counter()
    total = 0
    tensors = []
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        tensors.append(torch.frombuffer(bytearray(body), dtype=torch.uint8))
        total += len(body)
    return total / (time.perf_counter() - start) / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warpload", default=os.path.join(HERE, "..", "build", "warpload"))
    ap.add_argument("--work", default="/tmp/objbench")
    ap.add_argument("--size", default="2GiB")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--s3-size", default="512MiB")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--request-size", type=int, default=8 << 20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--touch-gib", type=int, default=3)
    ap.add_argument("--skip-s3", action="store_true")
    args = ap.parse_args()

    servers = servers_module()
    cli = os.path.abspath(args.warpload)
    work = os.path.abspath(args.work)
    data = os.path.join(work, "data")
    if not os.path.exists(os.path.join(data, "model.safetensors.index.json")):
        subprocess.run([cli, "gen", data, "--size", args.size, "--shards", str(args.shards)],
                       check=True, stdout=subprocess.DEVNULL)
    state = os.path.join(work, "state")
    servers.stop(state)
    subprocess.run(["rm", "-rf", state], check=True)
    os.makedirs(state)
    config = os.path.join(work, "http.json")
    with open(config, "w") as f:
        json.dump({"version": 1, "http": {"connections": args.connections,
                                          "request_size": args.request_size}}, f)
    try:
        servers.make_certificate(state)
        http, _ = servers.start_nginx(state, data)
        url = http + "/model.safetensors.index.json"
        # Page cache warm for nginx: both sides then read the same cached bytes.
        curl_ceiling(http, data, args.connections)
        ceiling, ours, rss, to_memory = 0.0, 0.0, None, 0.0
        sink = os.path.join("/dev/shm", f"objbench-{os.getpid()}")
        os.makedirs(sink, exist_ok=True)
        for _ in range(args.runs):
            touch_and_free(args.touch_gib)
            ceiling = max(ceiling, curl_ceiling(http, data, args.connections))
            touch_and_free(args.touch_gib)
            to_memory = max(to_memory, curl_ceiling(http, data, args.connections, sink=sink))
            # Huge pages freed moments ago, as the load's allocator takes them: an untimed local
            # load of the same bytes from the page cache.
            subprocess.run([cli, "load", data, "--backend", "posix"], check=True,
                           stdout=subprocess.DEVNULL)
            r = warpload_load(cli, url, config)
            if r["gbps"] > ours:
                ours = r["gbps"]
            # Peak RSS of the whole CLI process (libraries included) against the bytes loaded.
            peak = (r["peak_rss_bytes"], r["bytes"])
            rss = peak if rss is None else min(rss, peak)
        print(f"nginx, {args.size} in {args.shards} shards, {args.connections} connections, "
              f"{args.request_size} B requests, best of {args.runs}:")
        print(f"  ceiling (parallel curl)  {ceiling:6.2f} GB/s")
        print(f"  parallel curl into tmpfs {to_memory:6.2f} GB/s   (the same, writing memory)")
        print(f"  warpload load            {ours:6.2f} GB/s   ratio {ours / ceiling:.2f} "
              f"(to tmpfs curl: {ours / to_memory:.2f})")
        os.rmdir(sink)
        if rss is not None:
            print(f"  peak RSS of the CLI      {rss[0]} B for {rss[1]} B "
                  f"({100.0 * (rss[0] - rss[1]) / rss[1]:+.1f}%)")
        if args.skip_s3:
            return 0

        small = os.path.join(work, "s3data")
        if not os.path.exists(os.path.join(small, "model.safetensors.index.json")):
            subprocess.run([cli, "gen", small, "--size", args.s3_size, "--shards",
                            str(args.shards)], check=True, stdout=subprocess.DEVNULL)
        endpoint = servers.start_s3rver(state, small)
        keys = shards_of(small)
        os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "S3RVER",
                           "AWS_SECRET_ACCESS_KEY": "S3RVER", "AWS_REGION": "us-east-1"})
        os.environ.pop("AWS_SESSION_TOKEN", None)
        import warpload

        boto, ours_py, s3_ceiling = 0.0, 0.0, 0.0
        bucket = servers.BUCKET
        signed = ("--aws-sigv4", "aws:amz:us-east-1:s3", "-u", "S3RVER:S3RVER", "-H",
                  "x-amz-content-sha256: " + servers.EMPTY_SHA256)
        for _ in range(args.runs):
            s3_ceiling = max(s3_ceiling, curl_ceiling(f"{endpoint}/{bucket}", small,
                                                      args.connections, signed))
            touch_and_free(args.touch_gib)
            boto = max(boto, boto3_load(endpoint, bucket, keys))
            touch_and_free(args.touch_gib)
            start = time.perf_counter()
            loaded = warpload.load_file([f"s3://{bucket}/{k}" for k in keys], framework="pt",
                                        config=config)
            seconds = time.perf_counter() - start
            nbytes = sum(t.numel() * t.element_size() for t in loaded.values())
            del loaded
            ours_py = max(ours_py, nbytes / seconds / 1e9)
        print(f"s3rver, {args.s3_size} in {len(keys)} shards, best of {args.runs}:")
        print(f"  ceiling (parallel signed curl)       {s3_ceiling:6.3f} GB/s")
        print(f"  boto3 get_object + torch.frombuffer  {boto:6.3f} GB/s")
        print(f"  warpload.load_file(s3://...)         {ours_py:6.3f} GB/s   "
              f"ratio {ours_py / boto:.2f}")
    finally:
        servers.stop(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
