/**
 * Static checks of the deployment artefacts: Dockerfile, .dockerignore and the Kubernetes
 * manifests in deploy/kubernetes. They run everywhere (no Docker engine, no cluster) and keep
 * the numbers that must agree across files from drifting apart: the port (Dockerfile EXPOSE,
 * HEALTHCHECK, containerPort, probes, Service targetPort), the non-root uid, the shutdown
 * timeout vs. the grace period, and --workers vs. the CPU limit.
 *
 * The real container run is tests/docker/smoke.sh (needs an engine, not in the default run).
 */
import assert from "node:assert/strict";
// Test-only dependency: a real YAML parser, so the manifests are read the way kubectl reads them.
// Inline and versioned on purpose, so the server's import map (deno.json) does not carry it.
import { parseAllDocuments } from "yaml";

const ROOT = new URL("../", import.meta.url);
const K8S = new URL("deploy/kubernetes/", ROOT);

const PORT = 8080;
const NONROOT_UID = 65532;
const SHUTDOWN_TIMEOUT_S = 10;

// ---------------------------------------------------------------------------------------------
// Minimal shapes of the manifests; only the fields under test.

interface Probe {
  httpGet?: { path?: string; port?: number | string };
}
interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol?: string;
}
interface Resources {
  requests?: { cpu?: string | number; memory?: string };
  limits?: { cpu?: string | number; memory?: string };
}
interface SecurityContext {
  runAsNonRoot?: boolean;
  runAsUser?: number;
  readOnlyRootFilesystem?: boolean;
  allowPrivilegeEscalation?: boolean;
  privileged?: boolean;
  capabilities?: { drop?: string[]; add?: string[] };
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  ports?: ContainerPort[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  resources?: Resources;
  securityContext?: SecurityContext;
  volumeMounts?: { name: string; mountPath: string }[];
  lifecycle?: unknown;
}
interface Deployment {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec: {
    replicas: number;
    selector: { matchLabels: Record<string, string> };
    template: {
      metadata: { labels: Record<string, string> };
      spec: {
        terminationGracePeriodSeconds?: number;
        securityContext?: SecurityContext;
        containers: Container[];
        volumes?: { name: string }[];
      };
    };
  };
}
interface Service {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec: {
    type?: string;
    selector: Record<string, string>;
    ports: { name?: string; port: number; targetPort?: number | string; protocol?: string }[];
  };
}
interface Hpa {
  apiVersion: string;
  kind: string;
  spec: {
    scaleTargetRef: { apiVersion: string; kind: string; name: string };
    minReplicas: number;
    maxReplicas: number;
    metrics: {
      type: string;
      resource?: {
        name: string;
        target: { type: string; averageUtilization?: number };
      };
    }[];
  };
}
interface Kustomization {
  kind: string;
  resources: string[];
}

/** Parses a manifest file that must hold exactly one YAML document, without errors. */
function loadYaml<T>(url: URL): T {
  const docs = parseAllDocuments(Deno.readTextFileSync(url));
  assert.ok(Array.isArray(docs), `${url.pathname}: not a YAML stream`);
  assert.equal(docs.length, 1, `${url.pathname}: expected exactly one document`);
  const [doc] = docs;
  assert.deepEqual(doc.errors.map(String), [], `${url.pathname}: YAML errors`);
  return doc.toJS() as T;
}

const deployment = () => loadYaml<Deployment>(new URL("deployment.yaml", K8S));
const service = () => loadYaml<Service>(new URL("service.yaml", K8S));
const hpa = () => loadYaml<Hpa>(new URL("hpa.yaml", K8S));

function reactorContainer(d: Deployment): Container {
  const containers = d.spec.template.spec.containers;
  assert.equal(containers.length, 1, "one container per pod");
  return containers[0];
}

/** Resolves a probe/Service port (number or container port name) to a number. */
function resolvePort(c: Container, port: number | string | undefined): number {
  assert.notEqual(port, undefined, "port is set");
  if (typeof port === "number") return port;
  if (/^\d+$/.test(port!)) return Number(port);
  const named = c.ports?.find((p) => p.name === port);
  assert.ok(named, `port name ${port} is declared in the container's ports`);
  return named.containerPort;
}

/** Value following `flag` in an argv list (`--flag value`). */
function flagValue(args: readonly string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i === -1 ? undefined : args[i + 1];
}

/** Kubernetes CPU quantity ("2", 2, "1500m") in cores. */
function cpuCores(q: string | number | undefined): number {
  assert.notEqual(q, undefined, "cpu quantity is set");
  if (typeof q === "number") return q;
  const m = /^(\d+(?:\.\d+)?)(m?)$/.exec(q!);
  assert.ok(m, `cpu quantity ${q} parses`);
  return m[2] === "m" ? Number(m[1]) / 1000 : Number(m[1]);
}

/** Kubernetes memory quantity in bytes (binary and decimal suffixes). */
function memoryBytes(q: string | undefined): number {
  assert.notEqual(q, undefined, "memory quantity is set");
  const m = /^(\d+)(Ki|Mi|Gi|K|M|G)?$/.exec(q!);
  assert.ok(m, `memory quantity ${q} parses`);
  const unit: Record<string, number> = {
    "": 1,
    K: 1e3,
    M: 1e6,
    G: 1e9,
    Ki: 1024,
    Mi: 1024 ** 2,
    Gi: 1024 ** 3,
  };
  return Number(m[1]) * unit[m[2] ?? ""];
}

// ---------------------------------------------------------------------------------------------
// Dockerfile: a small parser (continuations, comments, stages), enough for these checks.

interface Instruction {
  keyword: string;
  args: string;
}
interface Stage {
  base: string;
  name?: string;
  instructions: Instruction[];
}
interface Dockerfile {
  globalArgs: Map<string, string | undefined>;
  stages: Stage[];
}

function parseDockerfile(text: string): Dockerfile {
  const logical: string[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    // Docker drops comment lines, also in the middle of a continued instruction.
    if (/^\s*#/.test(line) || (pending === "" && line.trim() === "")) continue;
    if (line.endsWith("\\")) {
      pending += line.slice(0, -1) + " ";
      continue;
    }
    logical.push((pending + line).trim());
    pending = "";
  }
  assert.equal(pending, "", "Dockerfile does not end inside a continued line");

  const globalArgs = new Map<string, string | undefined>();
  const stages: Stage[] = [];
  for (const l of logical) {
    const m = /^(\S+)\s*(.*)$/.exec(l)!;
    const keyword = m[1].toUpperCase();
    const args = m[2].replace(/\s+/g, " ");
    if (keyword === "FROM") {
      const f = /^(?:--platform=\S+ )?(\S+)(?: AS (\S+))?$/i.exec(args);
      assert.ok(f, `FROM line parses: ${l}`);
      stages.push({ base: f[1], name: f[2]?.toLowerCase(), instructions: [] });
    } else if (stages.length === 0) {
      assert.equal(keyword, "ARG", `only ARG may come before the first FROM: ${l}`);
      const [name, ...value] = args.split("=");
      globalArgs.set(name, value.length ? value.join("=") : undefined);
    } else {
      stages[stages.length - 1].instructions.push({ keyword, args });
    }
  }
  return { globalArgs, stages };
}

const dockerfile = () => parseDockerfile(Deno.readTextFileSync(new URL("Dockerfile", ROOT)));

function stage(df: Dockerfile, name: string): Stage {
  const s = df.stages.find((st) => st.name === name);
  assert.ok(s, `stage ${name} exists`);
  return s;
}

/** The single instruction `keyword` of a stage (the last one wins in Docker; require one). */
function only(s: Stage, keyword: string): string {
  const found = s.instructions.filter((i) => i.keyword === keyword);
  assert.equal(found.length, 1, `stage ${s.name} has exactly one ${keyword}`);
  return found[0].args;
}

/** Parses an exec-form (JSON array) argument list; shell form fails the assertion. */
function execForm(args: string, what: string): string[] {
  assert.ok(args.startsWith("["), `${what} uses exec form (JSON array), got: ${args}`);
  const parsed: unknown = JSON.parse(args);
  assert.ok(
    Array.isArray(parsed) && parsed.every((a) => typeof a === "string"),
    `${what} is a JSON array of strings`,
  );
  return parsed as string[];
}

/** HEALTHCHECK [options] CMD [...] -> options and the exec-form command. */
function healthcheck(s: Stage): { options: string; cmd: string[] } {
  const args = only(s, "HEALTHCHECK");
  const m = /^(.*?)\s*\bCMD\s+(.*)$/s.exec(args);
  assert.ok(m, `HEALTHCHECK of ${s.name} has a CMD`);
  return { options: m[1], cmd: execForm(m[2], `HEALTHCHECK of ${s.name}`) };
}

/** `USER uid[:gid]` must be the numeric non-root uid (numeric so runAsNonRoot can verify it). */
function assertNonRootUser(s: Stage) {
  const user = only(s, "USER");
  const [uid] = user.split(":");
  assert.equal(uid, String(NONROOT_UID), `stage ${s.name} runs as uid ${NONROOT_UID}`);
}

function assertServeDefaults(cmd: string[], what: string) {
  assert.equal(cmd[0], "serve", `${what}: serve subcommand`);
  assert.equal(flagValue(cmd, "--app"), "http", `${what}: --app http`);
  assert.equal(flagValue(cmd, "--host"), "0.0.0.0", `${what}: listens on all interfaces`);
  assert.equal(flagValue(cmd, "--port"), String(PORT), `${what}: --port ${PORT}`);
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

Deno.test("Dockerfile: base image ARGs with pinned defaults", () => {
  const df = dockerfile();
  assert.equal(df.globalArgs.get("DENO_IMAGE"), "denoland/deno:2.9.6");
  assert.equal(df.globalArgs.get("RUNTIME_IMAGE"), "gcr.io/distroless/cc-debian12:nonroot");
  // The deno image's tag should be the deno version the project is developed with.
  const [major, minor] = Deno.version.deno.split(".");
  assert.match(df.globalArgs.get("DENO_IMAGE")!, new RegExp(`:${major}\\.${minor}\\.`));
  for (const s of df.stages) {
    // glibc only: the server dlopens libc.so.6, which musl images do not have.
    const base = s.base.replace(/\$\{(\w+)\}/g, (_, v: string) => df.globalArgs.get(v) ?? "");
    assert.doesNotMatch(base, /alpine|musl/i, `stage ${s.name} is not Alpine/musl: ${base}`);
  }
});

Deno.test("Dockerfile: stages build, source and runtime, runtime is the default (last)", () => {
  const df = dockerfile();
  const names = df.stages.map((s) => s.name);
  for (const n of ["build", "source", "runtime"]) assert.ok(names.includes(n), `stage ${n}`);
  assert.equal(names.at(-1), "runtime", "runtime is the last stage, so the default target");
  assert.equal(stage(df, "runtime").base, "${RUNTIME_IMAGE}");
  // Every other stage derives from the Deno image, directly or through another stage.
  const byName = new Map(df.stages.map((s) => [s.name, s]));
  for (const s of df.stages.slice(0, -1)) {
    let base = s.base;
    for (let hops = 0; byName.has(base) && hops < 10; hops++) base = byName.get(base)!.base;
    assert.equal(base, "${DENO_IMAGE}", `stage ${s.name} builds on the Deno image`);
  }
});

Deno.test("Dockerfile: build stage installs deps and runs the compile task", () => {
  const df = dockerfile();
  // Instructions of `build` and of the stages it derives from, in order.
  const chain: Stage[] = [];
  for (let s: Stage | undefined = stage(df, "build"); s;) {
    chain.unshift(s);
    s = df.stages.find((st) => st.name === s!.base);
  }
  const runs = chain.flatMap((s) => s.instructions).filter((i) => i.keyword === "RUN");
  const install = runs.findIndex((r) => /\bdeno install\b/.test(r.args));
  const compile = runs.findIndex((r) => /\bdeno task compile\b/.test(r.args));
  assert.ok(install !== -1, "deno install runs");
  assert.ok(compile > install, "deno task compile runs after deno install");

  // The runtime stage copies exactly the compile task's output, and nothing else.
  const task = JSON.parse(Deno.readTextFileSync(new URL("deno.json", ROOT))).tasks?.compile;
  assert.equal(typeof task, "string", "deno.json has a compile task");
  const output = flagValue(task.split(/\s+/), "--output");
  assert.ok(output, "compile task sets --output");
  const copies = stage(df, "runtime").instructions.filter((i) =>
    ["COPY", "ADD"].includes(i.keyword)
  );
  assert.equal(copies.length, 1, "runtime copies a single artefact");
  assert.match(copies[0].args, /^--from=build\s/, "from the build stage");
  const [src, dest] = copies[0].args.replace(/^--from=build\s+/, "").split(" ");
  assert.equal(src.replace(/^\/app\//, ""), output.replace(/^\.\//, ""));
  assert.equal(dest, "/reactor");
});

Deno.test("Dockerfile: the source target never needs denort", () => {
  // The legacy builder runs every stage up to --target in file order, so no compile step may
  // come before `source` (or be one of its ancestors), or `--target source` needs denort too.
  const df = dockerfile();
  const idx = df.stages.findIndex((s) => s.name === "source");
  for (const s of df.stages.slice(0, idx + 1)) {
    for (const i of s.instructions) {
      assert.doesNotMatch(i.args, /deno (task )?compile/, `stage ${s.name} compiles: ${i.args}`);
    }
  }
});

for (const name of ["runtime", "source"]) {
  Deno.test(`Dockerfile: ${name} stage runs non-root with port, signal, health check`, () => {
    const s = stage(dockerfile(), name);
    assertNonRootUser(s);
    assert.equal(only(s, "EXPOSE"), String(PORT));
    // SIGTERM is what `docker stop` and the kubelet send and what the server handles as PID 1.
    assert.equal(only(s, "STOPSIGNAL"), "SIGTERM");

    const entry = execForm(only(s, "ENTRYPOINT"), `ENTRYPOINT of ${name}`);
    const cmd = execForm(only(s, "CMD"), `CMD of ${name}`);
    assertServeDefaults(cmd, `CMD of ${name}`);

    const hc = healthcheck(s);
    if (name === "runtime") {
      assert.deepEqual(entry, ["/reactor"]);
      assert.deepEqual(hc.cmd, ["/reactor", "probe", "--port", String(PORT)]);
    } else {
      assert.equal(entry[0], "deno");
      assert.equal(entry[1], "run");
      assert.match(entry.at(-1)!, /main\.ts$/);
      // The health check runs the same program as the entrypoint, with the probe subcommand.
      assert.deepEqual(hc.cmd.slice(0, entry.length), entry);
      assert.deepEqual(hc.cmd.slice(entry.length), ["probe", "--port", String(PORT)]);
      assert.ok(entry.includes("--cached-only"), "source target never downloads at run time");
    }
    // The probe's own timeout (default 2000 ms) must fit in the health check's.
    const timeout = /--timeout=(\d+)s/.exec(hc.options);
    assert.ok(timeout && Number(timeout[1]) > 2, "HEALTHCHECK --timeout longer than 2 s");
  });
}

Deno.test(".dockerignore keeps tests, tooling and local state out of the context", () => {
  const patterns = Deno.readTextFileSync(new URL(".dockerignore", ROOT))
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  for (const p of [".git", "node_modules", "dist", "tests", "bench", "docs", "deploy"]) {
    assert.ok(patterns.includes(p), `.dockerignore lists ${p}`);
  }
  for (const needed of ["main.ts", "deno.json", "deno.lock", "syscalls", "reactor", "handlers"]) {
    assert.ok(!patterns.includes(needed), `.dockerignore must not exclude ${needed}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Kubernetes

Deno.test("k8s Deployment: replicas, labels, port, args", () => {
  const d = deployment();
  assert.equal(d.apiVersion, "apps/v1");
  assert.equal(d.kind, "Deployment");
  assert.equal(d.spec.replicas, 2);
  for (const [k, v] of Object.entries(d.spec.selector.matchLabels)) {
    assert.equal(d.spec.template.metadata.labels[k], v, `pod template has selector label ${k}`);
  }
  const c = reactorContainer(d);
  assert.equal(c.command, undefined, "the image's ENTRYPOINT is kept (works for both targets)");
  assert.deepEqual(c.ports?.map((p) => p.containerPort), [PORT]);
  const args = c.args ?? [];
  assertServeDefaults(args, "container args");
  assert.equal(flagValue(args, "--shutdown-timeout"), String(SHUTDOWN_TIMEOUT_S));
});

Deno.test("k8s Deployment: readiness and liveness probes GET /health on the container port", () => {
  const c = reactorContainer(deployment());
  for (const [kind, probe] of [["readiness", c.readinessProbe], ["liveness", c.livenessProbe]]) {
    const p = probe as Probe | undefined;
    assert.ok(p?.httpGet, `${kind} probe is httpGet`);
    assert.equal(p.httpGet.path, "/health", `${kind} probe path`);
    assert.equal(resolvePort(c, p.httpGet.port), PORT, `${kind} probe port`);
  }
});

Deno.test("k8s Deployment: requests and limits, --workers matches the CPU limit", () => {
  const c = reactorContainer(deployment());
  const r = c.resources;
  assert.ok(r?.requests && r.limits, "requests and limits are set");
  const reqCpu = cpuCores(r.requests.cpu);
  const limCpu = cpuCores(r.limits.cpu);
  assert.ok(reqCpu > 0 && reqCpu <= limCpu, "0 < cpu request <= cpu limit");
  const reqMem = memoryBytes(r.requests.memory);
  const limMem = memoryBytes(r.limits.memory);
  assert.ok(reqMem > 0 && reqMem <= limMem, "0 < memory request <= memory limit");

  const workers = flagValue(c.args ?? [], "--workers");
  assert.ok(workers, "--workers is passed");
  assert.ok(Number.isInteger(limCpu), "the CPU limit is whole cores, so workers can match it");
  assert.equal(Number(workers), limCpu, "one worker per core of the CPU limit");
});

Deno.test("k8s Deployment: non-root, read-only, no privilege escalation, no capabilities", () => {
  const d = deployment();
  const c = reactorContainer(d);
  const sc = c.securityContext;
  assert.ok(sc, "container securityContext");
  assert.equal(sc.runAsNonRoot, true);
  assert.equal(sc.runAsUser, NONROOT_UID);
  assert.equal(sc.readOnlyRootFilesystem, true);
  assert.equal(sc.allowPrivilegeEscalation, false);
  assert.deepEqual(sc.capabilities?.drop, ["ALL"]);
  assert.equal(sc.capabilities?.add, undefined, "no capability added back");
  assert.notEqual(sc.privileged, true);
  // The pod level, when set, must agree with the container level.
  const pod = d.spec.template.spec.securityContext;
  if (pod?.runAsUser !== undefined) assert.equal(pod.runAsUser, NONROOT_UID);
  if (pod?.runAsNonRoot !== undefined) assert.equal(pod.runAsNonRoot, true);
  // Every mount is backed by a declared volume (a typo would leave / read-only for it).
  const volumes = new Set(d.spec.template.spec.volumes?.map((v) => v.name));
  for (const m of c.volumeMounts ?? []) assert.ok(volumes.has(m.name), `volume ${m.name}`);
});

Deno.test("k8s Deployment: preStop sleep + shutdown timeout fit in the grace period", () => {
  const d = deployment();
  const c = reactorContainer(d);
  const grace = d.spec.template.spec.terminationGracePeriodSeconds;
  assert.equal(grace, 30);
  const timeout = Number(flagValue(c.args ?? [], "--shutdown-timeout"));
  const lifecycle = c.lifecycle as
    | { preStop?: { exec?: unknown; sleep?: { seconds?: number } } }
    | undefined;
  // An exec hook needs a shell, and the distroless image has none.
  assert.equal(lifecycle?.preStop?.exec, undefined, "no exec preStop hook in a shell-less image");
  // The server stops accepting on SIGTERM, so the pod must keep serving while its endpoint
  // removal propagates: the built-in sleep action delays SIGTERM without a shell.
  const sleep = lifecycle?.preStop?.sleep?.seconds ?? 0;
  assert.ok(sleep >= 1, "preStop sleep covers the endpoint removal race");
  // The grace period counts from the start of the preStop hook.
  assert.ok(
    grace > sleep + timeout,
    `grace ${grace}s > preStop ${sleep}s + --shutdown-timeout ${timeout}s`,
  );
});

Deno.test("k8s Service: ClusterIP 80 -> the container port the probes use", () => {
  const d = deployment();
  const c = reactorContainer(d);
  const s = service();
  assert.equal(s.apiVersion, "v1");
  assert.equal(s.kind, "Service");
  assert.equal(s.spec.type ?? "ClusterIP", "ClusterIP");
  for (const [k, v] of Object.entries(s.spec.selector)) {
    assert.equal(d.spec.template.metadata.labels[k], v, `Service selects pods by ${k}`);
  }
  assert.equal(s.spec.ports.length, 1);
  const [port] = s.spec.ports;
  assert.equal(port.port, 80);
  // An unset targetPort defaults to `port` (80), which nothing listens on.
  const target = resolvePort(c, port.targetPort);
  assert.equal(target, PORT);
  assert.equal(target, resolvePort(c, c.readinessProbe?.httpGet?.port), "readiness port");
  assert.equal(target, resolvePort(c, c.livenessProbe?.httpGet?.port), "liveness port");
  assert.equal(target, Number(flagValue(c.args ?? [], "--port")), "the server's --port");
});

Deno.test("k8s HPA: autoscaling/v2 on CPU 70%, 2..10 replicas of the Deployment", () => {
  const d = deployment();
  const h = hpa();
  assert.equal(h.apiVersion, "autoscaling/v2");
  assert.equal(h.kind, "HorizontalPodAutoscaler");
  assert.deepEqual(h.spec.scaleTargetRef, {
    apiVersion: d.apiVersion,
    kind: d.kind,
    name: d.metadata.name,
  });
  assert.equal(h.spec.minReplicas, 2);
  assert.equal(h.spec.maxReplicas, 10);
  assert.ok(h.spec.minReplicas <= d.spec.replicas, "Deployment replicas within the HPA range");
  assert.equal(h.spec.metrics.length, 1);
  const [m] = h.spec.metrics;
  assert.equal(m.type, "Resource");
  assert.equal(m.resource?.name, "cpu");
  assert.equal(m.resource?.target.type, "Utilization");
  assert.equal(m.resource?.target.averageUtilization, 70);
  // Utilization is relative to the request, so the request must exist.
  assert.ok(reactorContainer(d).resources?.requests?.cpu, "cpu request set for the HPA");
});

Deno.test("k8s kustomization lists every manifest", () => {
  const k = loadYaml<Kustomization>(new URL("kustomization.yaml", K8S));
  assert.equal(k.kind, "Kustomization");
  assert.deepEqual([...k.resources].sort(), ["deployment.yaml", "hpa.yaml", "service.yaml"]);
  for (const r of k.resources) Deno.statSync(new URL(r, K8S));
});
