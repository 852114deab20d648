"""The deployment files against the code they deploy: the Dockerfile's runtime packages against
the libraries the binaries link, the Kubernetes manifests against the server's configuration,
and that configuration file against the real server (started with it, on the CPU: no card here).

Usage: deploy_test.py SOURCE_DIR SERVER_BINARY CLI_BINARY DEFAULT_MODELS_DIR
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import unittest

import yaml

SOURCE, SERVER, CLI, DEFAULT_MODELS = sys.argv[1:5]
MODELS = os.environ.get("ACCLLM_MODELS_DIR") or DEFAULT_MODELS
K8S = os.path.join(SOURCE, "deploy", "k8s")
with open(os.path.join(K8S, "server.toml"), "rb") as f:
    CONFIG = tomllib.load(f)
BASE_IMAGE_PACKAGES = {"libc6", "libstdc++6", "libgcc-s1", "zlib1g"}


def read(path):
    with open(path) as f:
        return f.read()


def owner(library):
    """The Debian package that installed `library` (tries the /usr-merged twin too)."""
    for path in (library, library.replace("/usr/lib/", "/lib/", 1), library.replace("/lib/", "/usr/lib/", 1)):
        out = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.split(":")[0]
    raise AssertionError(f"no package owns {library}")


def dependency_closure(packages):
    """`packages` and everything they depend on, from dpkg's records of installed packages."""
    seen, todo = set(), list(packages)
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        out = subprocess.run(["dpkg-query", "-W", "-f=${Depends},${Pre-Depends}", pkg], capture_output=True, text=True)
        for alternative in re.split(r"[,|]", out.stdout):
            name = alternative.strip().split(" ")[0].split(":")[0]
            if name:
                todo.append(name)
    return seen


class DockerfileTest(unittest.TestCase):
    def test_runtime_stage_installs_every_library_the_binaries_link(self):
        with open(os.path.join(SOURCE, "Dockerfile")) as f:
            text = f.read()
        runtime = text[text.rindex("FROM debian:12-slim"):]
        install = re.search(r"apt-get install -y --no-install-recommends(.*?)&&", runtime, re.S).group(1)
        listed = set(install.replace("\\", " ").split())
        provided = dependency_closure(listed | BASE_IMAGE_PACKAGES)
        for binary in (SERVER, CLI):
            out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
            for path in re.findall(r"=> (/\S+)", out):
                package = owner(os.path.realpath(path))
                if re.fullmatch(r"lib(asan|ubsan|tsan|lsan)\d+", package):
                    continue  # a sanitizer build of the binaries; the image builds without
                self.assertIn(package, provided, f"{os.path.basename(binary)} links {path} ({package})")
        self.assertIn("COPY deploy/k8s/server.toml /etc/accllm/server.toml", runtime)


class KubernetesManifestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.path.join(K8S, "kustomization.yaml")) as f:
            cls.kustomization = yaml.safe_load(f)
        cls.docs = {}
        for name in cls.kustomization["resources"]:
            with open(os.path.join(K8S, name)) as f:
                doc = yaml.safe_load(f)
            cls.docs[doc["kind"]] = doc
        cls.container = cls.docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]

    def test_kustomization_files_exist(self):
        for generator in self.kustomization["configMapGenerator"]:
            for name in generator["files"]:
                self.assertTrue(os.path.exists(os.path.join(K8S, name)), name)

    def test_ports_match_the_server_configuration(self):
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.assertEqual(ports["grpc"], int(CONFIG["listen"].rsplit(":", 1)[1]))
        self.assertEqual(ports["metrics"], int(CONFIG["metrics-listen"].rsplit(":", 1)[1]))
        self.assertEqual(self.container["readinessProbe"]["grpc"]["port"], ports["grpc"])
        service = {p["name"]: p["targetPort"] for p in self.docs["Service"]["spec"]["ports"]}
        self.assertEqual(set(service.values()), set(ports))

    def test_files_the_configuration_names_are_mounted(self):
        mounts = [m["mountPath"] for m in self.container["volumeMounts"]]
        config = self.container["args"][self.container["args"].index("--config") + 1]
        for path in (config, CONFIG["model"], CONFIG["xclbin"]):
            self.assertTrue(any(path.startswith(m + "/") for m in mounts), path)

    def test_requests_a_u280_and_outlives_the_drain(self):
        limits = self.container["resources"]["limits"]
        self.assertTrue(any(re.match(r"(amd|xilinx)\.com/.*u280", k) for k in limits), limits)
        grace = self.docs["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        self.assertGreater(grace, CONFIG["grace"])

    def test_container_arguments_are_server_flags(self):
        help_text = subprocess.run([SERVER, "--help"], capture_output=True, text=True).stdout
        for arg in self.container["args"]:
            if arg.startswith("--"):
                self.assertIn(arg, help_text)


class ShippedConfigurationTest(unittest.TestCase):
    def test_the_server_starts_with_it_and_serves_on_the_cpu_without_cards(self):
        with tempfile.NamedTemporaryFile(prefix="accllm-deploy-", suffix=".log") as log:
            server = subprocess.Popen(
                [SERVER, "--config", os.path.join(K8S, "server.toml"), "--model", os.path.join(MODELS, "stories260K.bin"),
                 "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
                stderr=log, stdout=subprocess.DEVNULL)
            try:
                port = None
                for _ in range(3000):
                    m = re.search(r"serving .* on port (\d+)", read(log.name))
                    if m:
                        port = m.group(1)
                        break
                    if server.poll() is not None:
                        break
                    time.sleep(0.01)
                text = read(log.name)
                self.assertIsNotNone(port, text)
                self.assertIn("no FPGA cards found", text)
                out = subprocess.run([CLI, "client", "--server", f"127.0.0.1:{port}", "-p", "Once upon a time", "-n", "20",
                                      "--temperature", "0"], capture_output=True, text=True, timeout=60)
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertTrue(out.stdout.startswith("Once upon a time"), out.stdout)
            finally:
                server.send_signal(signal.SIGTERM)
                self.assertEqual(server.wait(timeout=60), 0)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
