import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { startProvider, startRelay, stopStarted, type TestRelay } from './helpers.js';
import { parseConfig } from '../src/config/index.js';

/*
 * deploy/kubernetes as `kubectl apply -k` would send it: every object valid against the Kubernetes
 * (and Prometheus Operator) schemas, and every port, probe path, config key and metric it names
 * existing in the relay. Rendered with `kubectl kustomize` where kubectl is installed; elsewhere
 * the kustomization's resources are read and its namespace applied (all it does besides labels).
 */

const DIR = path.resolve('deploy/kubernetes');
type Manifest = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string }; [key: string]: unknown };

async function render(): Promise<Manifest[]> {
  try {
    return docs(execFileSync('kubectl', ['kustomize', DIR], { encoding: 'utf8' }));
  } catch {
    const kustomization = docs(await readFile(path.join(DIR, 'kustomization.yaml'), 'utf8'))[0] as unknown as { namespace: string; resources: string[] };
    const manifests = (await Promise.all(kustomization.resources.map(async (file) => docs(await readFile(path.join(DIR, file), 'utf8'))))).flat();
    for (const manifest of manifests) if (manifest.kind !== 'Namespace') manifest.metadata.namespace = kustomization.namespace;
    return manifests;
  }
}

function docs(text: string): Manifest[] {
  return parseAllDocuments(text).map((doc) => doc.toJS() as Manifest).filter(Boolean);
}

/** The model class for an object: kubernetes-models, or the Prometheus Operator's. */
async function modelOf(manifest: Manifest): Promise<new (data: unknown) => { validate(): void }> {
  const [group, version] = manifest.apiVersion.includes('/') ? manifest.apiVersion.split('/') : ['', manifest.apiVersion];
  const module = group === 'monitoring.coreos.com' ? `@kubernetes-models/prometheus-operator/${group}/${version}/${manifest.kind}` : `kubernetes-models/${group ? `${group}/` : ''}${version}/${manifest.kind}`;
  return ((await import(module)) as Record<string, new (data: unknown) => { validate(): void }>)[manifest.kind];
}

const byKind = (manifests: Manifest[], kind: string, name?: string) => manifests.find((manifest) => manifest.kind === kind && (!name || manifest.metadata.name === name))!;

describe('deploy/kubernetes', () => {
  let manifests: Manifest[];
  let relay: TestRelay;
  let relayConfig: ReturnType<typeof parseConfig>;

  beforeAll(async () => {
    manifests = await render();
    const configMap = byKind(manifests, 'ConfigMap') as unknown as { data: Record<string, string> };
    const env = { POD_NAME: 'smtp-oauth-relay-0', POD_IP: '10.0.0.7', TOKEN_KEY: 'a token key of sixteen or more', CLUSTER_SECRET: 'q1ZKo2C0mIm7v6u+3fJ3Xb9w0yRkT4sLpA8eDgHcNzU=', REDIS_PASSWORD: 'a redis password', OFFICE_CLIENT_SECRET: 'secret', PRINTER_2F_PASSWORD: 'a printer password' };
    relayConfig = parseConfig(configMap.data['config.yaml'], '/etc/smtp-oauth-relay/config.yaml', env);
    relay = await startRelay(await startProvider(), { top: { cluster: undefined } });
  });

  afterAll(stopStarted);

  it('renders objects that validate against the Kubernetes and Prometheus Operator schemas', async () => {
    expect(manifests.map((manifest) => manifest.kind).sort()).toEqual(
      ['ConfigMap', 'Namespace', 'NetworkPolicy', 'NetworkPolicy', 'PodDisruptionBudget', 'PrometheusRule', 'Service', 'Service', 'Service', 'ServiceMonitor', 'StatefulSet', 'StatefulSet'].sort(),
    );
    for (const manifest of manifests) {
      const Model = await modelOf(manifest);
      expect(() => new Model(manifest).validate(), `${manifest.kind} ${manifest.metadata.name}`).not.toThrow();
    }
  });

  it('carries a config the relay accepts, with the ports, probes and secrets the StatefulSet uses', async () => {
    const { config } = relayConfig;
    expect(config.cluster?.name).toBe('smtp-oauth-relay-0');
    const statefulSet = byKind(manifests, 'StatefulSet', 'smtp-oauth-relay') as unknown as {
      spec: { template: { spec: { terminationGracePeriodSeconds: number; containers: { ports: { name: string; containerPort: number }[]; readinessProbe: { httpGet: { path: string } }; livenessProbe: { httpGet: { path: string } }; env: { name: string }[] }[] } } };
    };
    const pod = statefulSet.spec.template.spec;
    const container = pod.containers[0];
    expect(Object.fromEntries(container.ports.map((port) => [port.name, port.containerPort]))).toEqual({ smtp: config.smtp.port, http: config.http.port });
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(5 + config.queue.shutdownTimeout + 20); // preStop, drain, handoff
    const configMap = byKind(manifests, 'ConfigMap') as unknown as { data: Record<string, string> };
    const referenced = [...configMap.data['config.yaml'].matchAll(/\$\{([A-Z_0-9]+)\}/g)].map((match) => match[1]);
    expect(referenced.every((name) => container.env.some((variable) => variable.name === name))).toBe(true);
    for (const probe of [container.readinessProbe, container.livenessProbe]) {
      const response = await fetch(`http://127.0.0.1:${relay.httpPort}${probe.httpGet.path}`);
      expect(response.status, probe.httpGet.path).toBe(200);
    }
  });

  it('keeps Valkey and the peer port to the relay pods, Valkey behind an ACL user whose password is in the Secret', async () => {
    const relayPods = { podSelector: { matchLabels: { 'app.kubernetes.io/name': 'smtp-oauth-relay' } } };
    const valkeyPolicy = byKind(manifests, 'NetworkPolicy', 'smtp-oauth-relay-valkey') as unknown as { spec: { ingress: { from: unknown[]; ports: { port: number }[] }[] } };
    expect(valkeyPolicy.spec.ingress).toEqual([{ from: [relayPods], ports: [{ port: 6379, protocol: 'TCP' }] }]);
    const relayPolicy = byKind(manifests, 'NetworkPolicy', 'smtp-oauth-relay') as unknown as { spec: { ingress: { from?: unknown[]; ports: { port: number }[] }[] } };
    const http = relayPolicy.spec.ingress.find((rule) => rule.ports.some((port) => port.port === 9464))!;
    expect(http.from).toContainEqual(relayPods);
    const valkey = byKind(manifests, 'StatefulSet', 'smtp-oauth-relay-valkey') as unknown as { spec: { template: { spec: { containers: { args: string[]; env: { name: string; valueFrom: unknown }[] }[] } } } };
    const [container] = valkey.spec.template.spec.containers;
    expect(container.args.join(' ')).toContain('--user default off --user relay on >$(REDIS_PASSWORD)');
    expect(container.env).toContainEqual({ name: 'REDIS_PASSWORD', valueFrom: { secretKeyRef: { name: 'smtp-oauth-relay-secrets', key: 'redis-password' } } });
    expect(relayConfig.config.cluster).toMatchObject({ redis: 'redis://relay@smtp-oauth-relay-valkey:6379', redisPassword: 'a redis password' });
  });

  it('names the scrape job as the SmtpRelayDown alert expects it', async () => {
    const monitor = byKind(manifests, 'ServiceMonitor') as unknown as { spec: { endpoints: { relabelings?: { targetLabel: string; replacement: string }[] }[] } };
    const job = monitor.spec.endpoints[0].relabelings?.find((relabel) => relabel.targetLabel === 'job')?.replacement;
    const rule = byKind(manifests, 'PrometheusRule') as unknown as { spec: { groups: { rules: { alert?: string; expr: string }[] }[] } };
    const down = rule.spec.groups.flatMap((group) => group.rules).find((entry) => entry.alert === 'SmtpRelayDown')!;
    expect(down.expr).toContain(`up{job="${job}"}`);
  });

  it('ships a handoff Job that validates and runs the queue handoff command', async () => {
    const [job] = docs(await readFile(path.join(DIR, 'handoff-job.example.yaml'), 'utf8'));
    const Model = await modelOf(job);
    expect(() => new Model(job).validate()).not.toThrow();
    const args = (job as unknown as { spec: { template: { spec: { containers: { args: string[] }[] } } } }).spec.template.spec.containers[0].args;
    expect(args.slice(0, 4)).toEqual(['queue', 'handoff', '--data-dir', '/data']);
  });
});
