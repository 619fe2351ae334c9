/**
 * The relay beside Postfix on the devices' own workload, in one interleaved run: the same client
 * (Python's smtplib, bench/smtp-load.py), the same ~10 KB scan, each workload repeated and the median taken. Postfix (Debian's
 * package, a private instance) relays in plain text straight to a sink; the relay goes through
 * STARTTLS + XOAUTH2 to the stand-in provider. Accepted = messages/s the client got 250 for;
 * drained = messages/s until the last one reached its sink. CPU = user + system time per message of
 * every process of the system under test (Postfix: its master and all it started; the relay).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { SMTPServer } from 'smtp-server';
import { DEVICE, MAILBOX, freePort } from './harness.js';
import { message10k, startRelay } from './load.js';
import { PrivatePostfix } from './private-postfix.js';
import { record } from './report.js';
import { treeCpuSeconds } from './cpu.js';
import { FAKE_TLS, type FakeProvider } from '../src/demo/fake-provider.js';
import { packageRoot } from '../src/util/package-root.js';

const run = promisify(execFile);

const WORKLOADS = [
  { name: 'printer-style, 1 sender', concurrency: 1, count: 300, longSession: false },
  { name: 'printer-style, 10 senders', concurrency: 10, count: 600, longSession: false },
  { name: 'long sessions, 10 × 200', concurrency: 10, count: 2000, longSession: true },
] as const;

type Workload = (typeof WORKLOADS)[number];
interface Figures {
  accepted: number;
  drained: number;
  p50: number;
  /** CPU ms per message of the system's processes, where they are apart from the benchmark's. */
  cpuMs?: number;
}
/** The relay in one process, and with smtp.workers: auto (its sessions on every core). */
type System = 'postfix' | 'queue' | 'direct' | 'queue, workers' | 'direct, workers' | 'upstream';
const RELAYS = ['queue', 'direct', 'queue, workers', 'direct, workers'] as const;

export async function versusPostfix(provider: FakeProvider, token: string): Promise<void> {
  if (!PrivatePostfix.installed()) {
    process.stdout.write('versus Postfix: skipped, Postfix is not installed (apt-get install postfix)\n');
    return;
  }
  const sink = await startSink();
  const root = await mkdtemp(path.join(os.tmpdir(), 'bench-postfix-'));
  const postfixPort = await freePort();
  const postfix = await PrivatePostfix.start(root, { relayPort: sink.port, smtpPort: postfixPort });
  const limits = { smtp: { maxConnectionsPerIp: 1000, maxClients: 500 } };
  const relays = {
    queue: await startRelay(provider, { delivery: 'queue', ...limits }),
    direct: await startRelay(provider, { delivery: 'direct', ...limits }),
    'queue, workers': await startRelay(provider, { delivery: 'queue', smtp: { ...limits.smtp, workers: 'auto' } }),
    'direct, workers': await startRelay(provider, { delivery: 'direct', smtp: { ...limits.smtp, workers: 'auto' } }),
  };
  const messageFile = path.join(root, 'scan.eml');
  await writeFile(messageFile, message10k);
  const arrivedAtProvider = () => provider.received.length;
  const device = ['mfp@printers.local', '--login', DEVICE.username, DEVICE.password];
  // Postfix takes mail from its LAN (mynetworks) without AUTH; the baseline is the upstream itself.
  const clients: Record<System, Client> = {
    postfix: { messageFile, port: postfixPort, args: ['mfp@printers.local'], delivered: () => sink.count, cpu: () => treeCpuSeconds(postfix.masterPid) },
    ...(Object.fromEntries(RELAYS.map((system) => [system, { messageFile, port: relays[system].port, args: device, delivered: arrivedAtProvider, cpu: () => treeCpuSeconds(relays[system].child!.pid!) }])) as Record<(typeof RELAYS)[number], Client>),
    upstream: { messageFile, port: provider.smtpPort, args: [MAILBOX, '--starttls', FAKE_TLS.ca(), '--xoauth2', MAILBOX, token], delivered: arrivedAtProvider },
  };
  const repetitions = Number(process.env.BENCH_REPETITIONS ?? 3);
  process.stdout.write(`\nversus Postfix ${await postfixVersion()} (plain text to a sink; the relay: STARTTLS + XOAUTH2 to the stand-in), median of ${repetitions} interleaved runs\n`);
  try {
    for (const workload of WORKLOADS) {
      const runs = Object.fromEntries(Object.keys(clients).map((system) => [system, [] as Figures[]])) as Record<System, Figures[]>;
      for (let repetition = 0; repetition < repetitions; repetition++) {
        for (const system of Object.keys(runs) as System[]) {
          runs[system].push(await measure(workload, clients[system]));
        }
      }
      report(workload, Object.fromEntries(Object.entries(runs).map(([system, figures]) => [system, median(figures)])) as Record<System, Figures>);
    }
  } finally {
    await Promise.all([...Object.values(relays).map((relay) => relay.stop('SIGTERM')), postfix.stop(), sink.stop()]);
  }
}

function report(workload: Workload, figures: Record<System, Figures>): void {
  const { postfix, upstream } = figures;
  const name = (what: string) => `vs Postfix, ${workload.name}: ${what}`;
  const againstPostfix = (what: string, value: number, base: number) =>
    record({ name: name(what), value, unit: 'msg/s', baseline: base, ratio: value / base, target: '≥ 1.0 × Postfix', met: value >= base });
  for (const mode of ['queue', 'queue, workers'] as const) {
    againstPostfix(`${mode} accepted`, figures[mode].accepted, postfix.accepted);
    againstPostfix(`${mode} drained`, figures[mode].drained, postfix.drained);
  }
  for (const mode of ['direct', 'direct, workers'] as const) {
    record({ name: name(mode), value: figures[mode].accepted, unit: 'msg/s', baseline: postfix.accepted, ratio: figures[mode].accepted / postfix.accepted });
  }
  for (const mode of RELAYS) {
    const [relayCpu, postfixCpu] = [figures[mode].cpuMs!, postfix.cpuMs!];
    const target = mode.startsWith('queue');
    record({ name: name(`CPU per message, ${mode}`), value: relayCpu, unit: 'ms', baseline: postfixCpu, ratio: relayCpu / postfixCpu, target: target ? '≤ Postfix' : undefined, met: target ? relayCpu <= postfixCpu : undefined });
  }
  if (workload.longSession) {
    for (const mode of ['direct', 'direct, workers'] as const) {
      const ratio = figures[mode].accepted / upstream.accepted;
      record({ name: name(`${mode} vs straight to upstream`), value: figures[mode].accepted, unit: 'msg/s', baseline: upstream.accepted, ratio, target: '≥ 0.8 × upstream', met: ratio >= 0.8 });
    }
  }
  // With several senders the p50 follows from the throughput (Little's law); one sender shows the latency itself.
  if (workload.concurrency === 1) {
    for (const mode of ['queue', 'queue, workers'] as const) {
      const slower = figures[mode].p50 - postfix.p50;
      record({ name: name(`${mode} p50 − Postfix p50`), value: slower, unit: 'ms', baseline: postfix.p50, target: '≤ 2 ms', met: slower <= 2 });
    }
  }
}

interface Client {
  messageFile: string;
  port: number;
  /** The envelope sender and how to log in (smtp-load.py's arguments after the message file). */
  args: string[];
  /** Messages that reached this client's final sink so far. */
  delivered: () => number;
  /** CPU seconds the system under test used so far (all its processes). */
  cpu?: () => number;
}

/** One run: accepted and p50 from the client, drained once the sink has every message. */
async function measure(workload: Workload, client: Client): Promise<Figures> {
  const before = client.delivered();
  const cpuBefore = client.cpu?.();
  const started = performance.now();
  const script = path.join(packageRoot(), 'bench', 'smtp-load.py');
  const style = workload.longSession ? 'session' : 'printer';
  const { stdout } = await run('python3', [script, '127.0.0.1', String(client.port), String(workload.count), String(workload.concurrency), style, client.messageFile, ...client.args]);
  const sent = JSON.parse(stdout) as { rate: number; p50: number };
  const deadline = Date.now() + 120_000;
  while (client.delivered() - before < workload.count) {
    if (Date.now() > deadline) throw new Error(`only ${client.delivered() - before} of ${workload.count} messages drained within 120 s`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  const drainedSeconds = (performance.now() - started) / 1000;
  const cpuMs = client.cpu && cpuBefore !== undefined ? ((client.cpu() - cpuBefore) / workload.count) * 1000 : undefined;
  return { accepted: sent.rate, drained: workload.count / drainedSeconds, p50: sent.p50, cpuMs };
}

function median(runs: Figures[]): Figures {
  const middle = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const cpu = runs.flatMap((run) => (run.cpuMs === undefined ? [] : [run.cpuMs]));
  return { accepted: middle(runs.map((run) => run.accepted)), drained: middle(runs.map((run) => run.drained)), p50: middle(runs.map((run) => run.p50)), cpuMs: cpu.length ? middle(cpu) : undefined };
}

/** Where Postfix delivers: an SMTP server that only counts. */
async function startSink(): Promise<{ port: number; readonly count: number; stop(): Promise<void> }> {
  let count = 0;
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onData(stream, _session, callback) {
      stream.on('end', () => {
        count++;
        callback();
      });
      stream.resume();
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as { port: number }).port;
  return { port, get count() { return count; }, stop: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

async function postfixVersion(): Promise<string> {
  return run('postconf', ['-d', '-h', 'mail_version']).then(({ stdout }) => stdout.trim(), () => '');
}
