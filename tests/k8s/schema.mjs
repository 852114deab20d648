// Kubernetes objects against the published schemas: kubernetes-models' validators (types, formats,
// required fields, enums), and a strict pass for unknown fields, which those validators let
// through (the API server drops such fields with a warning; a misspelt probe or limit would
// silently not be there). The strict pass walks each object along kubernetes-models' type
// declarations, read by the TypeScript compiler.
import { createRequire } from "node:module";
import path from "node:path";
import ts from "typescript";

const require = createRequire(import.meta.url);

// apiVersion -> the package folder holding its models.
function modelFolder(apiVersion) {
  if (apiVersion.startsWith("monitoring.coreos.com/")) {
    return path.join(path.dirname(require.resolve("@kubernetes-models/prometheus-operator/package.json")), apiVersion);
  }
  return path.join(path.dirname(require.resolve("kubernetes-models/package.json")), apiVersion);
}

function modelModule(apiVersion) {
  const pkg = apiVersion.startsWith("monitoring.coreos.com/") ? "@kubernetes-models/prometheus-operator" : "kubernetes-models";
  return `${pkg}/${apiVersion}`;
}

// Throws with the validator's message when `object` breaks its schema; fails on kinds it has none for.
export async function validateSchema(object) {
  const module = await import(modelModule(object.apiVersion));
  const Model = module[object.kind];
  if (!Model) throw new Error(`no model for ${object.apiVersion} ${object.kind}`);
  new Model(object).validate();
}

// Every field path in `objects` that the object's type does not declare.
export function unknownFields(objects) {
  const files = objects.map((o) => path.join(modelFolder(o.apiVersion), `${o.kind}.d.ts`));
  const program = ts.createProgram([...new Set(files)], {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    noEmit: true,
  });
  const checker = program.getTypeChecker();
  const found = [];
  objects.forEach((object, i) => {
    const source = program.getSourceFile(files[i]);
    const symbol = checker.getSymbolAtLocation(source)?.exports?.get(`I${object.kind}`);
    if (!symbol) throw new Error(`no declaration I${object.kind} in ${files[i]}`);
    walk(checker, object, checker.getDeclaredTypeOfSymbol(symbol), `${object.kind}/${object.metadata?.name}`, found);
  });
  return found;
}

function walk(checker, value, type, where, found) {
  if (value === null || typeof value !== "object" || type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return;
  type = checker.getNonNullableType(type);
  if (Array.isArray(value)) {
    const element = checker.isArrayType(type) ? checker.getTypeArguments(type)[0] : undefined;
    if (!element) return found.push(`${where}: a list where the schema has none`);
    value.forEach((item, i) => walk(checker, item, element, `${where}[${i}]`, found));
    return;
  }
  // Unions of object types (rare in the core API): the value needs to fit one of them.
  if (type.isUnion()) {
    const candidates = type.types.filter((t) => t.flags & ts.TypeFlags.Object);
    if (candidates.length === 0) return;
    const attempts = candidates.map((t) => {
      const errors = [];
      walk(checker, value, t, where, errors);
      return errors;
    });
    const best = attempts.reduce((a, b) => (b.length < a.length ? b : a));
    found.push(...best);
    return;
  }
  const index = checker.getIndexInfosOfType(type).find((info) => info.keyType.flags & ts.TypeFlags.String);
  for (const [key, child] of Object.entries(value)) {
    const property = type.getProperty(key);
    if (property) {
      walk(checker, child, checker.getTypeOfSymbol(property), `${where}.${key}`, found);
    } else if (index) {
      walk(checker, child, index.type, `${where}.${key}`, found);
    } else {
      found.push(`${where}.${key}: not a field of this object`);
    }
  }
}
