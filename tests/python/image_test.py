"""The built image, run: its configuration (non-root user, labels, health check, entry point),
every binary's libraries present, and accllm-server on stories260K with accllm-gateway in front of
it, both inside the image, streaming a completion to curl outside it. scripts/image-test.sh builds
the image and runs this.

buildah runs the programs with chroot isolation: they share the host's network and process ids, so
the test reaches them on loopback and stops them with SIGTERM by the pids they write.

Usage: image_test.py IMAGE MODELS_DIR
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

IMAGE, MODELS = sys.argv[1:3]
ISOLATION = ["--isolation=chroot"]


def buildah(*args, **kwargs):
    return subprocess.run(["buildah", *args], capture_output=True, text=True, check=True, **kwargs).stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


class ImageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.config = json.loads(buildah("inspect", "--type", "image", IMAGE))["Docker"]["config"]
        cls.container = buildah("from", "--pull=never", IMAGE).strip()
        cls.scratch = tempfile.mkdtemp(prefix="accllm-image-")
        os.chmod(cls.scratch, 0o777)  # the image's user writes its pid here

    @classmethod
    def tearDownClass(cls):
        subprocess.run(["buildah", "rm", cls.container], capture_output=True)
        shutil.rmtree(cls.scratch, ignore_errors=True)

    def run_in_image(self, command, env=None):
        args = ["buildah", "run", *ISOLATION]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        return subprocess.run([*args, self.container, "--", *command], capture_output=True, text=True, timeout=120)

    def start_in_image(self, name, command):
        """Starts `command` in the image in the background; returns (log path, pid file path)."""
        log = os.path.join(self.scratch, f"{name}.log")
        pid = os.path.join(self.scratch, f"{name}.pid")
        script = f'echo $$ > /run/accllm-test/{name}.pid; exec "$@"'
        with open(log, "w") as out:
            self.processes[name] = subprocess.Popen(["buildah", "run", *ISOLATION, "-v", f"{MODELS}:/models:ro", "-v", f"{self.scratch}:/run/accllm-test",
                              self.container, "--", "sh", "-c", script, name, *command],
                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return log, pid

    def setUp(self):
        self.processes = {}

    def tearDown(self):
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def wait_for(self, log, pattern, seconds=60):
        for _ in range(int(seconds * 10)):
            m = re.search(pattern, read(log))
            if m:
                return m
            time.sleep(0.1)
        self.fail(f"'{pattern}' never appeared:\n{read(log)}")

    def wait_until_healthy(self, url, seconds=60):
        """Until the gateway sees its daemon serving (it learns that from the daemon's health watch)."""
        for _ in range(int(seconds * 10)):
            if subprocess.run(["curl", "-sf", url], capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        self.fail(f"{url} never answered 200")

    def stop(self, name, pid_file):
        """SIGTERM to the program; it exits 0 (buildah run passes its status on)."""
        os.kill(int(read(pid_file)), signal.SIGTERM)
        self.assertEqual(self.processes[name].wait(timeout=60), 0, name)

    def test_configuration(self):
        self.assertEqual(self.config["User"], "10001:10001")
        self.assertEqual(self.config["Entrypoint"], ["accllm-server"])
        self.assertEqual(self.config["Cmd"], ["--config", "/etc/accllm/server.toml"])
        self.assertEqual(self.config["Healthcheck"]["Test"], ["CMD", "accllm-healthcheck"])
        for port in ("50051/tcp", "9090/tcp", "8000/tcp"):
            self.assertIn(port, self.config["ExposedPorts"])
        labels = self.config["Labels"]
        for key in ("title", "description", "version", "base.name"):
            self.assertTrue(labels.get(f"org.opencontainers.image.{key}"), key)

    def test_every_library_is_there(self):
        out = self.run_in_image(["sh", "-c", "ldd /usr/local/bin/accllm /usr/local/bin/accllm-server "
                                             "/usr/local/bin/accllm-gateway /usr/local/bin/accllm-xclbin"])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertNotIn("not found", out.stdout)
        version = self.run_in_image(["accllm-server", "--version"])
        self.assertRegex(version.stdout, r"accllm-server \d+\.\d+\.\d+")

    def test_daemon_and_gateway_serve_a_completion(self):
        grpc, metrics, http = free_port(), free_port(), free_port()
        server_log, server_pid = self.start_in_image("server", [
            "accllm-server", "--config", "/etc/accllm/server.toml", "--model", "/models/stories260K.bin",
            "--listen", f"127.0.0.1:{grpc}", "--metrics-listen", f"127.0.0.1:{metrics}"])
        try:
            self.wait_for(server_log, r"serving .* on port (\d+)")
            self.assertIn("no FPGA cards found", read(server_log))  # the shipped config, on a host without cards
            # The programs run as the image's user.
            uid = re.search(r"^Uid:\s+(\d+)", read(f"/proc/{int(read(server_pid))}/status"), re.M).group(1)
            self.assertEqual(uid, "10001")
            health = self.run_in_image(["accllm-healthcheck"], env={"ACCLLM_HEALTH_PORT": grpc})
            self.assertEqual((health.returncode, health.stdout.strip()), (0, "SERVING"), health.stderr)

            gateway_log, gateway_pid = self.start_in_image("gateway", [
                "accllm-gateway", "--listen", f"127.0.0.1:{http}", "--upstream", f"127.0.0.1:{grpc}"])
            try:
                self.wait_for(gateway_log, r"listening on port (\d+)")
                self.wait_until_healthy(f"http://127.0.0.1:{http}/health")
                health = self.run_in_image(["accllm-healthcheck"], env={"ACCLLM_HEALTH": "gateway", "ACCLLM_HEALTH_PORT": http})
                self.assertEqual(health.returncode, 0, health.stderr)

                request = json.dumps({"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 40,
                                      "temperature": 0, "stream": True})
                out = subprocess.run(["curl", "-sSN", "--max-time", "60", f"http://127.0.0.1:{http}/v1/completions",
                                      "-H", "Content-Type: application/json", "-d", request],
                                     capture_output=True, text=True)
                self.assertEqual(out.returncode, 0, out.stderr)
                events = [line[len("data: "):] for line in out.stdout.splitlines() if line.startswith("data: ")]
                self.assertEqual(events[-1], "[DONE]", out.stdout)
                chunks = [json.loads(e) for e in events[:-1]]
                self.assertGreater(len(chunks), 1)
                text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
                self.assertGreater(len(text.split()), 5, text)
                self.assertIn(chunks[-1]["choices"][0]["finish_reason"], ("length", "stop"))
            finally:
                self.stop("gateway", gateway_pid)
        finally:
            self.stop("server", server_pid)
        self.assertIn("draining (signal 15", read(server_log))


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
