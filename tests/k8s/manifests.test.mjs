// deploy/k8s as users deploy it: each overlay rendered by `kubectl kustomize`, every object valid
// against the Kubernetes schemas with no unknown field, and the objects consistent with each other
// (selectors, ports, probes, volumes, secrets). The programs' side (the rendered daemon config and
// arguments start the real binaries) is tests/python/deploy_test.py.
//   node --test tests/k8s/manifests.test.mjs     (npm ci --prefix tests/k8s first)
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it, before } from "node:test";
import YAML from "yaml";
import { unknownFields, validateSchema } from "./schema.mjs";

const ROOT = path.resolve(import.meta.dirname, "../..");
const K8S = path.join(ROOT, "deploy/k8s");
const README = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
const U280 = /^(amd|xilinx)\.com\/.*u280/;

function render(dir) {
  const text = execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8" });
  return YAML.parseAllDocuments(text).map((d) => d.toJS());
}

// An overlay with every optional component, as a user composes one (kustomize wants relative paths).
function renderWithComponents(overlay) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "accllm-kustomize-"));
  const rel = (p) => path.relative(dir, path.join(K8S, p));
  const components = fs.readdirSync(path.join(K8S, "components")).map((c) => rel(`components/${c}`));
  fs.writeFileSync(path.join(dir, "kustomization.yaml"), YAML.stringify({
    apiVersion: "kustomize.config.k8s.io/v1beta1",
    kind: "Kustomization",
    resources: [rel(`overlays/${overlay}`)],
    components,
  }));
  try {
    return render(dir);
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
}

const find = (objects, kind, name) => objects.find((o) => o.kind === kind && o.metadata.name === name);
const podSpec = (deployment) => deployment.spec.template.spec;
const matches = (selector, labels) => Object.entries(selector).every(([k, v]) => labels?.[k] === v);

// Checks that hold for every rendering.
function checkConsistency(objects) {
  const deployments = objects.filter((o) => o.kind === "Deployment");
  assert.deepEqual(deployments.map((d) => d.metadata.name).sort(), ["accllm-daemon", "accllm-gateway"]);
  for (const d of deployments) {
    assert.ok(matches(d.spec.selector.matchLabels, d.spec.template.metadata.labels), `${d.metadata.name}: selector`);
    const spec = podSpec(d);
    for (const c of spec.containers) {
      const ports = new Map(c.ports.map((p) => [p.name, p.containerPort]));
      for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        const p = c[probe];
        if (!p) continue;
        const port = p.grpc?.port ?? p.httpGet?.port ?? p.tcpSocket?.port;
        assert.ok(ports.has(port) || [...ports.values()].includes(port), `${c.name} ${probe} port ${port}`);
      }
      assert.ok(c.readinessProbe && c.livenessProbe, `${c.name}: readiness and liveness probes`);
      assert.equal(c.securityContext.allowPrivilegeEscalation, false);
      assert.ok(c.resources.requests.memory && c.resources.limits.memory, `${c.name}: memory sized`);
      const volumes = new Set(spec.volumes.map((v) => v.name));
      for (const m of c.volumeMounts) assert.ok(volumes.has(m.name), `${c.name}: mount ${m.name} has a volume`);
    }
    assert.equal(spec.securityContext.runAsNonRoot, true);
    // Every ConfigMap and claim a pod uses is rendered; Secrets are made out of band, as the README says.
    for (const v of spec.volumes) {
      if (v.configMap) assert.ok(find(objects, "ConfigMap", v.configMap.name), `ConfigMap ${v.configMap.name}`);
      if (v.persistentVolumeClaim) {
        assert.ok(find(objects, "PersistentVolumeClaim", v.persistentVolumeClaim.claimName), v.persistentVolumeClaim.claimName);
      }
      if (v.secret) {
        const creates = new RegExp(`kubectl create secret \\S+ ${v.secret.secretName}\\b`);
        assert.ok(creates.test(README), `the README's Kubernetes section creates Secret ${v.secret.secretName}`);
      }
    }
  }
  // Services select exactly one Deployment's pods, on ports its container names.
  for (const s of objects.filter((o) => o.kind === "Service")) {
    const selected = deployments.filter((d) => matches(s.spec.selector, d.spec.template.metadata.labels));
    assert.equal(selected.length, 1, `Service ${s.metadata.name} selects ${selected.length} Deployments`);
    const names = podSpec(selected[0]).containers.flatMap((c) => c.ports.map((p) => p.name));
    for (const p of s.spec.ports) assert.ok(names.includes(p.targetPort), `Service ${s.metadata.name} port ${p.targetPort}`);
  }
  for (const pdb of objects.filter((o) => o.kind === "PodDisruptionBudget")) {
    assert.equal(deployments.filter((d) => matches(pdb.spec.selector.matchLabels, d.spec.template.metadata.labels)).length, 1);
  }
  // The gateway finds the daemons through the headless Service, on its gRPC port.
  const daemons = find(objects, "Service", "accllm-daemon");
  assert.equal(daemons.spec.clusterIP, "None");
  const gateway = podSpec(find(objects, "Deployment", "accllm-gateway")).containers[0];
  const upstream = gateway.args.find((a) => a.startsWith("--upstream=")).slice("--upstream=".length);
  const grpcPort = daemons.spec.ports.find((p) => p.name === "grpc").port;
  assert.equal(upstream, `${daemons.metadata.name}:${grpcPort}`);
  // Pods outlive the daemon's drain.
  const config = find(objects, "ConfigMap", objects.find((o) => o.kind === "ConfigMap").metadata.name).data["server.toml"];
  const grace = Number(config.match(/^grace\s*=\s*([0-9.]+)/m)[1]);
  for (const d of deployments) assert.ok(podSpec(d).terminationGracePeriodSeconds > grace, d.metadata.name);
}

for (const overlay of ["cpu", "fpga"]) {
  describe(`overlays/${overlay}`, () => {
    let objects;
    before(() => {
      objects = render(path.join(K8S, "overlays", overlay));
    });

    it("renders objects that fit the Kubernetes schemas", async () => {
      for (const o of objects) await validateSchema(o);
      assert.deepEqual(unknownFields(objects), []);
    });

    it("is consistent", () => checkConsistency(objects));

    it(overlay === "fpga" ? "requests one U280 and reads the node's model and xclbin" : "requests no card", () => {
      const daemon = podSpec(find(objects, "Deployment", "accllm-daemon"));
      const limits = Object.keys(daemon.containers[0].resources.limits ?? {});
      if (overlay === "fpga") {
        assert.deepEqual(limits.filter((k) => U280.test(k)).map((k) => daemon.containers[0].resources.limits[k]), [1]);
        for (const name of ["models", "xclbin"]) assert.ok(daemon.volumes.find((v) => v.name === name).hostPath, name);
        assert.equal(find(objects, "PersistentVolumeClaim", "accllm-models"), undefined);
      } else {
        assert.deepEqual(limits.filter((k) => U280.test(k)), []);
        assert.deepEqual(daemon.containers[0].args.slice(-2), ["--devices", "cpu"]);
      }
    });

    it("renders with every optional component", async () => {
      const all = renderWithComponents(overlay);
      for (const o of all) await validateSchema(o);
      assert.deepEqual(unknownFields(all), []);
      checkConsistency(all);
      const hpa = find(all, "HorizontalPodAutoscaler", "accllm-gateway");
      assert.ok(find(all, "Deployment", hpa.spec.scaleTargetRef.name));
      assert.equal(hpa.spec.metrics[0].pods.metric.name, "accllm_gateway_streams_open");
      for (const monitor of all.filter((o) => o.kind === "ServiceMonitor")) {
        const service = all.find((o) => o.kind === "Service" && matches(monitor.spec.selector.matchLabels, o.metadata.labels));
        assert.ok(service, `ServiceMonitor ${monitor.metadata.name} selects a Service`);
        for (const e of monitor.spec.endpoints) assert.ok(service.spec.ports.some((p) => p.name === e.port), e.port);
      }
      const gateway = podSpec(find(all, "Deployment", "accllm-gateway")).containers[0];
      assert.ok(gateway.args.includes("--tls-cert=/etc/accllm/gateway-tls/tls.crt"));
      assert.equal(gateway.readinessProbe.httpGet.scheme, "HTTPS");
    });
  });
}

describe("the strict check", () => {
  it("finds a misspelt field", () => {
    const objects = render(path.join(K8S, "overlays", "cpu"));
    const daemon = structuredClone(find(objects, "Deployment", "accllm-daemon"));
    podSpec(daemon).containers[0].readinessProbe.grcp = { port: 50051 };
    podSpec(daemon).containers[0].resources.limit = { cpu: "1" };
    assert.deepEqual(unknownFields([daemon]), [
      "Deployment/accllm-daemon.spec.template.spec.containers[0].readinessProbe.grcp: not a field of this object",
      "Deployment/accllm-daemon.spec.template.spec.containers[0].resources.limit: not a field of this object",
    ]);
  });
  it("and the schema check a wrong type", async () => {
    const objects = render(path.join(K8S, "overlays", "cpu"));
    const daemon = structuredClone(find(objects, "Deployment", "accllm-daemon"));
    podSpec(daemon).containers[0].readinessProbe.grpc.port = "grpc";
    await assert.rejects(validateSchema(daemon), /grpc\/port must be integer/);
  });
});

// The README's Kubernetes commands, as a user types them: `kubectl apply -k` renders, and the
// `kubectl create secret` lines make the Secrets the Deployments mount (client-side dry run).
describe("the README's kubectl commands", () => {
  const block = README.slice(README.indexOf("## Containers and Kubernetes"));
  const commands = [...block.matchAll(/^(kubectl .*?)(\s+#.*)?$/gm)].map((m) => m[1].trim());

  it("apply both overlays", () => {
    const applied = commands.filter((c) => c.startsWith("kubectl apply -k ")).map((c) => c.split(" ")[3]);
    assert.deepEqual(applied.sort(), ["deploy/k8s/overlays/cpu", "deploy/k8s/overlays/fpga"]);
    for (const dir of applied) assert.ok(render(path.join(ROOT, dir)).length > 0);
  });

  it("create the Secrets the pods mount, with the keys they read", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "accllm-secrets-"));
    try {
      fs.writeFileSync(path.join(dir, "api-keys.txt"), "key-1\n");
      execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=accllm-gateway",
                               "-keyout", path.join(dir, "gateway.key"), "-out", path.join(dir, "gateway.crt")], { stdio: "ignore" });
      const secrets = commands.filter((c) => c.startsWith("kubectl create secret ")).map((c) => {
        const args = c.split(/\s+/).slice(1).concat(["--dry-run=client", "-o", "yaml"]);
        return YAML.parse(execFileSync("kubectl", args, { cwd: dir, encoding: "utf8" }));
      });
      for (const s of secrets) await validateSchema(s);
      const all = renderWithComponents("cpu");
      const gateway = podSpec(find(all, "Deployment", "accllm-gateway"));
      for (const volume of gateway.volumes.filter((v) => v.secret)) {
        const secret = secrets.find((s) => s.metadata.name === volume.secret.secretName);
        assert.ok(secret, `the README creates ${volume.secret.secretName}`);
        const mount = gateway.containers[0].volumeMounts.find((m) => m.name === volume.name).mountPath;
        for (const arg of gateway.containers[0].args.filter((a) => a.includes(`=${mount}/`))) {
          const key = arg.split(`${mount}/`)[1];
          assert.ok(key in secret.data, `${arg}: the Secret ${secret.metadata.name} has no key ${key}`);
        }
      }
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });
});
