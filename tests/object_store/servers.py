#!/usr/bin/env python3
"""Test servers for warpload's object storage backend, on 127.0.0.1 only.

    servers.py start STATE_DIR   writes checkpoints into STATE_DIR/data, starts
                                 nginx (HTTP, and HTTPS + HTTP/2 with a throwaway certificate),
                                 s3rver (S3 with SigV4, listing) holding the same objects, and
                                 our fault server; writes STATE_DIR/state.json; returns when all
                                 answer
    servers.py stop STATE_DIR    stops what `start` started (by the pids it recorded)
    servers.py fault-server PORT ROOT   (internal) the fault server

state.json: {"data": DIR, "http": URL, "https": URL, "ca": CERT, "s3_endpoint": URL,
"bucket": NAME, "faults": URL, "skip": ""}. A missing server program (nginx, node, s3rver
under tests/object_store/node_modules: `make deps` installs them) fails `start`, unless
WARPLOAD_OBJECT_STORE_SKIP=1, which writes {"skip": REASON} for the tests to skip with.

The fault server serves ROOT with Range, ETag and If-Match like a plain web server; the first
path component picks a fault, counted per (component, file); a suffix "-TAG" gives a test
counters of its own (e.g. /replace2-cli/F), since the servers outlive each test:
    /ok/F            no fault
    /503x<N>/F       the first N requests answer 503 SlowDown (S3's XML)
    /drop<N>/F       the first N responses stop after half their body and close the connection
    /short<N>/F      the first N responses declare and send only half the bytes asked for
    /stall<N>/F      the first N responses send a few bytes, then nothing for 30 s
    /replace<K>/F    after K requests the object has a new ETag (and If-Match fails with 412)
    /norange/F       Range is ignored: 200 with the whole file
    /always503/F     every request answers 503
    /region/F        S3's answer for a bucket in another region: 301 PermanentRedirect with
                     x-amz-bucket-region: eu-west-3 (as a bucket "region" behind
                     AWS_ENDPOINT_URL=<this server>)
"""
import email.utils
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
S3RVER = os.path.join(HERE, "node_modules", "s3rver", "bin", "s3rver.js")
BUCKET = "warpload-test"
KEY_ID = "S3RVER"  # s3rver's built-in key pair: the only one it accepts
SECRET = "S3RVER"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# ---- checkpoints ----------------------------------------------------------------------------

def write_safetensors(path, tensors, seed, header_pad=0):
    """tensors: list of (name, dtype, shape). Deterministic bytes from `seed`."""
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1}
    header = {}
    offset = 0
    for name, dtype, shape in tensors:
        n = sizes[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt", "pad": "x" * header_pad}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    data = random.Random(seed).randbytes(offset)  # deterministic, not all zeros
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(data)


def make_data(root):
    model = os.path.join(root, "model")
    os.makedirs(model, exist_ok=True)
    weight_map = {}
    shards = 3
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors = [(f"layers.{s}.w{i}", "F32", (256, 257 + i)) for i in range(6)]
        tensors.append((f"layers.{s}.bias", "BF16", (3, 5)))
        write_safetensors(os.path.join(model, name), tensors, seed=s + 11)
        for t in tensors:
            weight_map[t[0]] = name
    with open(os.path.join(model, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)
    # A prefix with shards and no index; a "subdirectory" the prefix must not enter.
    shards_dir = os.path.join(root, "shards")
    os.makedirs(os.path.join(shards_dir, "nested"), exist_ok=True)
    for s in range(2):
        write_safetensors(os.path.join(shards_dir, f"part-{s}.safetensors"),
                          [(f"p{s}.a", "F16", (1000, 33)), (f"p{s}.b", "I64", (77,))], seed=40 + s)
    write_safetensors(os.path.join(shards_dir, "nested", "other.safetensors"),
                      [("nested.x", "F32", (4,))], seed=50)
    # One file of 24 MiB (several requests at small request sizes), one with a header longer
    # than the speculative first GET (1 MiB), an empty object, a text file.
    write_safetensors(os.path.join(root, "single.safetensors"),
                      [("big", "F32", (6 * 1024, 1024)), ("odd", "U8", (12345,))], seed=7)
    write_safetensors(os.path.join(root, "bigheader.safetensors"),
                      [(f"t{i:05d}", "F16", (3,)) for i in range(9000)], seed=9,
                      header_pad=1 << 20)
    open(os.path.join(root, "empty.safetensors"), "wb").close()
    with open(os.path.join(root, "notes.safetensors"), "w") as f:
        f.write("this is not a checkpoint\n")


def objects(root):
    for dirpath, _, files in os.walk(root):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            yield os.path.relpath(path, root).replace(os.sep, "/"), path


# ---- the fault server -----------------------------------------------------------------------

class FaultHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    counters = {}
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def count(self, key):
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + 1
            return self.counters[key]

    def send_503(self):
        body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                b"<Message>Please reduce your request rate.</Message></Error>")
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        parts = self.path.split("/", 2)
        if len(parts) < 3 or ".." in parts[2]:
            self.send_error(404)
            return
        fault, rel = parts[1], parts[2]
        path = os.path.join(self.server.root, rel)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        n = self.count((fault, rel))
        m = re.fullmatch(r"(503x|[a-z]+)(\d*)(?:-[a-z0-9]+)?", fault)
        kind, limit = (m.group(1), int(m.group(2) or 0)) if m else (fault, 0)
        if kind == "always" or (kind == "503x" and n <= limit):
            self.send_503()
            return
        if kind == "region":
            body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>PermanentRedirect'
                    b"</Code><Message>The bucket you are attempting to access must be addressed "
                    b"using the specified endpoint.</Message></Error>")
            self.send_response(301)
            self.send_header("x-amz-bucket-region", "eu-west-3")
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        size = os.path.getsize(path)
        version = 2 if kind == "replace" and n > limit else 1
        etag = '"%x-%x-v%d"' % (int(os.path.getmtime(path)), size, version)
        want = self.headers.get("If-Match")
        if want is not None and want != etag:
            self.send_response(412)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        first, last = 0, size - 1
        ranged = False
        r = self.headers.get("Range")
        if r and kind != "norange":
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", r.strip())
            if m:
                first = int(m.group(1))
                last = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
                ranged = True
                if first >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
        length = last - first + 1
        faulty = kind in ("drop", "short", "stall") and n <= limit
        declared = length // 2 if kind == "short" and faulty else length
        self.send_response(206 if ranged else 200)
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if ranged:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(declared))
        self.send_header("Last-Modified", email.utils.formatdate(usegmt=True))
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(first)
            if kind == "drop" and faulty:
                self.wfile.write(f.read(length // 2))
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if kind == "stall" and faulty:
                self.wfile.write(f.read(min(16, length)))
                self.wfile.flush()
                time.sleep(30)
                self.close_connection = True
                return
            left = declared
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)


class FaultServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def run_fault_server(port, root):
    server = FaultServer(("127.0.0.1", port), FaultHandler)
    server.root = root
    server.serve_forever()


# ---- start / stop ---------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, what, proc, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {seconds} s")


NGINX_CONF = """daemon off;
worker_processes 2;
{user}
pid {state}/nginx.pid;
error_log {state}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path {state}/tmp/body;
  proxy_temp_path {state}/tmp/proxy;
  fastcgi_temp_path {state}/tmp/fastcgi;
  uwsgi_temp_path {state}/tmp/uwsgi;
  scgi_temp_path {state}/tmp/scgi;
  types {{ }}
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{http_port};
    root {data};
  }}
  server {{
    listen 127.0.0.1:{https_port} ssl http2;
    ssl_certificate {state}/cert.pem;
    ssl_certificate_key {state}/key.pem;
    root {data};
  }}
}}
"""


def missing_programs():
    missing = []
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"):
        missing.append("nginx (apt nginx-light)")
    if shutil.which("node") is None:
        missing.append("node (apt nodejs)")
    if not os.path.exists(S3RVER):
        missing.append(f"s3rver ({S3RVER}: npm ci in tests/object_store)")
    if shutil.which("openssl") is None:
        missing.append("openssl")
    if shutil.which("curl") is None:
        missing.append("curl")
    return missing


def server_env():
    """The environment without the sanitizer runtimes a sanitized pytest run preloads: the
    servers are not ours to instrument."""
    return {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")}


def spawn(args, state, name):
    log = open(os.path.join(state, name + ".log"), "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=server_env())
    with open(os.path.join(state, "pids"), "a") as f:
        f.write(f"{proc.pid}\n")
    return proc


def s3_put(endpoint, key, path):
    subprocess.run(["curl", "-sS", "--fail", "--noproxy", "*", "--aws-sigv4",
                    "aws:amz:us-east-1:s3", "-u", f"{KEY_ID}:{SECRET}", "-H",
                    f"x-amz-content-sha256: {EMPTY_SHA256}", "-T", path,
                    f"{endpoint}/{BUCKET}/{key}", "-o", os.devnull], check=True,
                   env=server_env())


def start_nginx(state, root):
    """nginx serving `root` over HTTP and HTTPS + HTTP/2 (STATE/cert.pem must exist for the
    latter); returns the two base URLs. Also used by benchmarks/object_store_bench.py."""
    os.makedirs(os.path.join(state, "tmp"), exist_ok=True)
    http_port, https_port = free_port(), free_port()
    with open(os.path.join(state, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF.format(state=state, data=root, http_port=http_port,
                                  https_port=https_port,
                                  user="user root;" if os.geteuid() == 0 else ""))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = spawn([nginx, "-c", os.path.join(state, "nginx.conf"), "-p", state], state, "nginx")
    wait_for(http_port, "nginx", proc)
    wait_for(https_port, "nginx (https)", proc)
    return f"http://127.0.0.1:{http_port}", f"https://127.0.0.1:{https_port}"


def start_s3rver(state, root):
    """s3rver with bucket BUCKET holding every file under `root` (key = relative path);
    returns its endpoint URL."""
    # s3rver's continuation tokens are DES-encrypted, which Node 20's OpenSSL 3 offers only
    # through the legacy provider. s3rver checks the access key id but not SigV4 signatures.
    s3dir = os.path.join(state, "s3rver")
    os.makedirs(s3dir)
    port = free_port()
    proc = spawn(["node", "--openssl-legacy-provider", S3RVER, "-d", s3dir, "-a", "127.0.0.1",
                  "-p", str(port), "--no-vhost-buckets", "-s", "--configure-bucket", BUCKET],
                 state, "s3rver")
    wait_for(port, "s3rver", proc)
    endpoint = f"http://127.0.0.1:{port}"
    for key, path in objects(root):
        s3_put(endpoint, key, path)
    return endpoint


def make_certificate(state):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", os.path.join(state, "key.pem"),
                    "-out", os.path.join(state, "cert.pem")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=server_env())


def start(state):
    state = os.path.abspath(state)
    stop(state)
    shutil.rmtree(state, ignore_errors=True)
    os.makedirs(os.path.join(state, "tmp"))
    missing = missing_programs()
    if missing:
        reason = "object store test servers missing: " + ", ".join(missing)
        if os.environ.get("WARPLOAD_OBJECT_STORE_SKIP") == "1":
            with open(os.path.join(state, "state.json"), "w") as f:
                json.dump({"skip": reason + " (WARPLOAD_OBJECT_STORE_SKIP=1)"}, f)
            return {"skip": reason}
        raise SystemExit(reason + "; `make deps` installs them (or set "
                         "WARPLOAD_OBJECT_STORE_SKIP=1 outside `make test` to skip)")
    data = os.path.join(state, "data")
    make_data(data)
    make_certificate(state)
    http, https = start_nginx(state, data)
    endpoint = start_s3rver(state, data)
    fault_port = free_port()
    wait_for(fault_port, "fault server",
             spawn([sys.executable, os.path.abspath(__file__), "fault-server", str(fault_port),
                    data], state, "faults"))
    info = {"data": data, "http": http, "https": https, "ca": os.path.join(state, "cert.pem"),
            "s3_endpoint": endpoint, "bucket": BUCKET, "key_id": KEY_ID, "secret": SECRET,
            "faults": f"http://127.0.0.1:{fault_port}", "skip": ""}
    with open(os.path.join(state, "state.json"), "w") as f:
        json.dump(info, f)
    return info


def stop(state):
    pids = os.path.join(os.path.abspath(state), "pids")
    if not os.path.exists(pids):
        return
    with open(pids) as f:
        for line in f:
            pid = int(line)
            try:
                os.killpg(pid, signal.SIGTERM)  # each server runs in a session of its own
            except ProcessLookupError:
                pass
    deadline = time.time() + 5
    with open(pids) as f:
        alive = [int(line) for line in f]
    while alive and time.time() < deadline:
        alive = [p for p in alive if _alive(p)]
        time.sleep(0.05)
    for p in alive:
        try:
            os.killpg(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.remove(pids)


def _alive(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def main(argv):
    if len(argv) == 3 and argv[0] == "fault-server":
        run_fault_server(int(argv[1]), argv[2])
    elif len(argv) == 2 and argv[0] == "start":
        try:
            start(argv[1])
        except BaseException:
            stop(argv[1])
            raise
    elif len(argv) == 2 and argv[0] == "stop":
        stop(argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
