"""The deployment files against the code they deploy: the Dockerfile's runtime packages against
the libraries the binaries link, and each Kubernetes overlay, as `kubectl kustomize` renders it,
against the binaries: ports, probes, mounts and flags agree with the programs, and the rendered
daemon configuration and arguments start the real server, with the rendered gateway in front of
it serving a completion (on the CPU: no card here). The objects' schemas are tests/k8s; building
and running the image is scripts/image-test.sh.

Usage: deploy_test.py SOURCE_DIR SERVER_BINARY GATEWAY_BINARY CLI_BINARY DEFAULT_MODELS_DIR
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import unittest
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(__file__))
from gateway_stack import GatewayStack  # noqa: E402

SOURCE, SERVER, GATEWAY, CLI, DEFAULT_MODELS = sys.argv[1:6]
MODELS = os.environ.get("ACCLLM_MODELS_DIR") or DEFAULT_MODELS
K8S = os.path.join(SOURCE, "deploy", "k8s")
OVERLAYS = ("cpu", "fpga")
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


def render(overlay):
    """The overlay's objects, by (kind, name); the ConfigMap under its generated name's stem."""
    text = subprocess.run(["kubectl", "kustomize", os.path.join(K8S, "overlays", overlay)], capture_output=True,
                          text=True, check=True).stdout
    objects = {}
    for doc in yaml.safe_load_all(text):
        name = doc["metadata"]["name"]
        if doc["kind"] == "ConfigMap":
            name = name.rsplit("-", 1)[0]
        objects[(doc["kind"], name)] = doc
    return objects


def flag_values(args):
    """{"--flag": value} from ["--flag=value"] and ["--flag", "value"] forms."""
    values, i = {}, 0
    while i < len(args):
        if "=" in args[i]:
            key, value = args[i].split("=", 1)
        else:
            key, value = args[i], args[i + 1] if i + 1 < len(args) else ""
            i += 1
        values[key] = value
        i += 1
    return values


class DockerfileTest(unittest.TestCase):
    def test_runtime_stage_installs_every_library_the_binaries_link(self):
        with open(os.path.join(SOURCE, "Dockerfile")) as f:
            text = f.read()
        runtime = text[text.rindex("FROM ${RUNTIME_IMAGE}"):]
        install = re.search(r"apt-get install -y --no-install-recommends(.*?)&&", runtime, re.S).group(1)
        listed = set(install.replace("\\", " ").split())
        # XRT comes from deploy/image/install-xrt.sh: Debian's runtime library unless AMD's package is given.
        self.assertIn("install-xrt.sh runtime", runtime)
        xrt = re.search(r"apt-get install -y --no-install-recommends (libxrt\S+)", read(os.path.join(SOURCE, "deploy/image/install-xrt.sh")))
        listed.add(xrt.group(1))
        provided = dependency_closure(listed | BASE_IMAGE_PACKAGES)
        for binary in (SERVER, GATEWAY, CLI):
            out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
            for path in re.findall(r"=> (/\S+)", out):
                package = owner(os.path.realpath(path))
                if re.fullmatch(r"lib(asan|ubsan|tsan|lsan)\d+", package):
                    continue  # a sanitizer build of the binaries; the image builds without
                self.assertIn(package, provided, f"{os.path.basename(binary)} links {path} ({package})")
        self.assertIn("COPY deploy/k8s/base/server.toml /etc/accllm/server.toml", runtime)
        self.assertRegex(runtime, r"\nUSER 10001")


class KubernetesOverlayTest(unittest.TestCase):
    """Each overlay's objects against the programs they run."""

    @classmethod
    def setUpClass(cls):
        cls.server_help = subprocess.run([SERVER, "--help"], capture_output=True, text=True).stdout
        cls.gateway_help = subprocess.run([GATEWAY, "--help"], capture_output=True, text=True).stdout

    def test_daemon_ports_probes_mounts_and_flags(self):
        for overlay in OVERLAYS:
            with self.subTest(overlay=overlay):
                objects = render(overlay)
                config = tomllib.loads(objects[("ConfigMap", "accllm-server-config")]["data"]["server.toml"])
                pod = objects[("Deployment", "accllm-daemon")]["spec"]["template"]["spec"]
                container = pod["containers"][0]
                ports = {p["name"]: p["containerPort"] for p in container["ports"]}
                self.assertEqual(ports["grpc"], int(config["listen"].rsplit(":", 1)[1]))
                self.assertEqual(ports["metrics"], int(config["metrics-listen"].rsplit(":", 1)[1]))
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    self.assertEqual(container[probe]["grpc"]["port"], ports["grpc"], probe)
                args = flag_values(container["args"])
                for flag in args:
                    self.assertRegex(self.server_help, rf"(^|[\s,]){re.escape(flag)}\b", flag)
                mounts = [m["mountPath"] for m in container["volumeMounts"]]
                needed = [args["--config"], config["model"]]
                if "fpga" in args.get("--devices", config["devices"]):
                    needed.append(config["xclbin"])
                for path in needed:
                    self.assertTrue(any(path.startswith(m + "/") for m in mounts), path)
                self.assertGreater(pod["terminationGracePeriodSeconds"], config["grace"])
                service = objects[("Service", "accllm-daemon")]["spec"]["ports"]
                self.assertEqual({p["targetPort"] for p in service}, set(ports))

    def test_gateway_ports_probes_and_flags(self):
        for overlay in OVERLAYS:
            with self.subTest(overlay=overlay):
                objects = render(overlay)
                container = objects[("Deployment", "accllm-gateway")]["spec"]["template"]["spec"]["containers"][0]
                self.assertEqual(container["command"], ["accllm-gateway"])
                args = flag_values(container["args"])
                for flag in args:
                    self.assertRegex(self.gateway_help, rf"(^|[\s,]){re.escape(flag)}\b", flag)
                http = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
                self.assertEqual(int(args["--listen"].rsplit(":", 1)[1]), http)
                self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/health")
                mounts = [m["mountPath"] for m in container["volumeMounts"]]
                self.assertTrue(any(args["--api-key-file"].startswith(m + "/") for m in mounts))

    def test_only_the_fpga_overlay_requests_a_card(self):
        for overlay in OVERLAYS:
            limits = render(overlay)[("Deployment", "accllm-daemon")]["spec"]["template"]["spec"]["containers"][0][
                "resources"]["limits"]
            cards = [k for k in limits if re.match(r"(amd|xilinx)\.com/.*u280", k)]
            self.assertEqual(len(cards), 1 if overlay == "fpga" else 0, (overlay, limits))


class RenderedDeploymentServesTest(unittest.TestCase):
    """The rendered daemon configuration and arguments start the real server; the rendered gateway
    arguments start the real gateway in front of it; a client with a key gets a completion."""

    def test_each_overlay_serves_a_completion_through_its_gateway(self):
        for overlay in OVERLAYS:
            with self.subTest(overlay=overlay), tempfile.TemporaryDirectory() as scratch:
                objects = render(overlay)
                config = os.path.join(scratch, "server.toml")
                with open(config, "w") as f:
                    f.write(objects[("ConfigMap", "accllm-server-config")]["data"]["server.toml"])
                daemon = objects[("Deployment", "accllm-daemon")]["spec"]["template"]["spec"]["containers"][0]["args"]
                daemon = [config if a == "/etc/accllm/server.toml" else a for a in daemon]
                keys = os.path.join(scratch, "api-keys")
                with open(keys, "w") as f:
                    f.write("key-1\n")
                gateway = flag_values(
                    objects[("Deployment", "accllm-gateway")]["spec"]["template"]["spec"]["containers"][0]["args"])
                gateway["--api-key-file"] = keys
                gateway_args = [f"{k}={v}" for k, v in gateway.items() if k not in ("--listen", "--upstream")]
                with GatewayStack(SERVER, GATEWAY, os.path.join(MODELS, "stories260K.bin"),
                                  os.path.join(MODELS, "tok512.bin"), server_args=daemon, gateway_args=gateway_args,
                                  api_key="key-1") as stack:
                    request = urllib.request.Request(
                        stack.gateway_url + "/v1/completions", method="POST",
                        headers={"Authorization": "Bearer key-1", "Content-Type": "application/json"},
                        data=json.dumps({"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 20,
                                         "temperature": 0}).encode())
                    with urllib.request.urlopen(request, timeout=60) as r:
                        body = json.loads(r.read())
                    self.assertGreater(len(body["choices"][0]["text"].split()), 3, body)
                    self.assertEqual(body["usage"]["completion_tokens"], 20)
                    request.remove_header("Authorization")
                    with self.assertRaises(urllib.error.HTTPError) as refused:
                        urllib.request.urlopen(request, timeout=60)
                    self.assertEqual(refused.exception.code, 401)


class HealthProbeTest(unittest.TestCase):
    """`accllm client --health`, the image's health check of the daemon."""

    def test_serving_unreachable_and_unknown_service(self):
        with GatewayStack(SERVER, GATEWAY, os.path.join(MODELS, "stories260K.bin"), os.path.join(MODELS, "tok512.bin"),
                          server_args=["--devices", "cpu"]) as stack:
            probe = [CLI, "client", "--health", "--server", f"127.0.0.1:{stack.daemon_port}"]
            out = subprocess.run(probe, capture_output=True, text=True, timeout=30)
            self.assertEqual((out.returncode, out.stdout.strip()), (0, "SERVING"), out.stderr)
            out = subprocess.run(probe + ["--health-service", "no.such.Service"], capture_output=True, text=True, timeout=30)
            self.assertEqual(out.returncode, 1)
            self.assertIn("health check of", out.stderr)
            port = stack.daemon_port
        out = subprocess.run([CLI, "client", "--health", "--health-timeout", "1", "--server", f"127.0.0.1:{port}"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 1)
        self.assertIn("failed", out.stderr)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
