"""accllm-server and accllm-gateway as processes on loopback, for tests and benchmarks that
drive the gateway with clients we did not write.

    with GatewayStack(server_bin, gateway_bin, model, tokenizer, gateway_args=[...]) as stack:
        stack.gateway_url   # http://127.0.0.1:PORT
        stack.metrics_url   # the daemon's /metrics
"""
import json
import os
import re
import struct
import subprocess
import tempfile
import time
import urllib.request


def _wait_for(log_path, pattern, process, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(log_path) as f:
            m = re.search(pattern, f.read())
        if m:
            return m
        if process.poll() is not None:
            break
        time.sleep(0.01)
    with open(log_path) as f:
        raise RuntimeError(f"{what} did not start:\n" + f.read())


def stretched_stories(models_dir, path, context=4096):
    """stories260K with a longer context, so that a request can run for as long as a test needs
    (its weights do not depend on the context). The file is llama2.c's legacy layout, whose
    trailing RoPE tables (which loaders recompute rather than read) grow with the context: they
    are padded with zeros."""
    with open(os.path.join(models_dir, "stories260K.bin"), "rb") as f:
        data = bytearray(f.read())
    dim, _, _, heads, _, _, old_context = struct.unpack("7i", data[:28])
    data[24:28] = struct.pack("i", context)
    data += bytes((context - old_context) * (dim // heads) * 4)  # real and imaginary halves
    with open(path, "wb") as f:
        f.write(data)
    return path


def get(url, timeout=10, key=None):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return r.status, r.read().decode()


class GatewayStack:
    def __init__(self, server_bin, gateway_bin, model, tokenizer, server_args=(), gateway_args=(), api_key=None):
        self.api_key = api_key
        self.server_bin, self.gateway_bin = server_bin, gateway_bin
        self.model, self.tokenizer = model, tokenizer
        self.server_args, self.gateway_args = list(server_args), list(gateway_args)
        self.processes = []

    def __enter__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="accllm-gateway-stack-")
        server_log = os.path.join(self.dir.name, "server.log")
        gateway_log = os.path.join(self.dir.name, "gateway.log")
        with open(server_log, "w") as log:
            server = subprocess.Popen(
                [self.server_bin, "-m", self.model, "-t", self.tokenizer, "--listen", "127.0.0.1:0",
                 "--metrics-listen", "127.0.0.1:0"] + self.server_args,
                stderr=log, stdout=subprocess.DEVNULL)
        self.processes.append(server)
        m = _wait_for(server_log, r"metrics on port (\d+)[\s\S]*serving .* on port (\d+)", server, "accllm-server")
        self.metrics_port, self.daemon_port = int(m.group(1)), int(m.group(2))
        with open(gateway_log, "w") as log:
            gateway = subprocess.Popen(
                [self.gateway_bin, "--upstream", f"127.0.0.1:{self.daemon_port}", "--listen", "127.0.0.1:0"]
                + self.gateway_args, stderr=log, stdout=subprocess.DEVNULL)
        self.processes.append(gateway)
        m = _wait_for(gateway_log, r"listening on port (\d+)", gateway, "accllm-gateway")
        self.gateway_port = int(m.group(1))
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.gateway_pid = gateway.pid
        # Ready once the gateway sees the daemon serving and knows its model.
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                status, _ = get(self.gateway_url + "/health")
                models = json.loads(get(self.gateway_url + "/v1/models", key=self.api_key)[1])
                if status == 200 and models["data"]:
                    return self
            except Exception:
                pass
            time.sleep(0.05)
        raise RuntimeError("the gateway never saw its daemon serving")

    def daemon_metric(self, name):
        """The value of one daemon metric line (an exact name with labels), or None."""
        _, text = get(self.metrics_url)
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return None

    def __exit__(self, *exc):
        for p in reversed(self.processes):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.dir.cleanup()
        return False
