import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FileTraceLog, type TraceEvent } from '../src/trace/index.js';
import { createLogger } from '../src/log.js';
import { deviceSender, load, startRelay } from './load.js';
import { record } from './report.js';
import { treeCpuSeconds } from './cpu.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/**
 * What the delivery log costs: the same queue-mode load (printer-style, 10 devices) with
 * trace.enabled true and false, in interleaved repetitions (this machine drifts between runs),
 * compared by their medians: throughput, and the relay's CPU per message, which the client and
 * the upstream sharing the cores disturb less.
 */
export async function traceCost(provider: FakeProvider): Promise<void> {
  const repetitions = Number(process.env.BENCH_REPETITIONS ?? 7);
  const count = 600;
  const rates: Record<'on' | 'off', number[]> = { on: [], off: [] };
  const cpu: Record<'on' | 'off', number[]> = { on: [], off: [] };
  for (let run = 0; run < repetitions; run++) {
    for (const setting of run % 2 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
      const relay = await startRelay(provider, { delivery: 'queue', trace: { enabled: setting === 'on' }, smtp: { maxConnectionsPerIp: 1000, maxClients: 500 } });
      await load(() => deviceSender(relay.port, false), 50, 10); // warm-up
      const before = treeCpuSeconds(relay.child!.pid!);
      rates[setting].push((await load(() => deviceSender(relay.port, false), count, 10)).rate);
      await new Promise((resolve) => setTimeout(resolve, 1500)); // the deliveries and the log's last flush
      cpu[setting].push(((treeCpuSeconds(relay.child!.pid!) - before) / count) * 1000);
      await relay.stop('SIGTERM');
    }
  }
  const [on, off] = [median(rates.on), median(rates.off)];
  record({ name: 'throughput queue printer-style c=10, delivery log on', value: on, unit: 'msg/s', baseline: off, ratio: on / off, target: '≥ 0.95 × log off', met: on / off >= 0.95 });
  const [cpuOn, cpuOff] = [median(cpu.on), median(cpu.off)];
  record({ name: 'relay CPU per message (receive + deliver), delivery log on', value: cpuOn, unit: 'ms', baseline: cpuOff, ratio: cpuOn / cpuOff });
  const writer = await writerCost();
  record({ name: 'delivery-log writer per message (3 events, in process)', value: writer, unit: 'ms', baseline: cpuOff, ratio: writer / cpuOff });
}

/** The log writer alone: what a queued message's three events cost it, buffered writes included. */
async function writerCost(): Promise<number> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-trace-'));
  const log = new FileTraceLog(dir, { retentionMs: Infinity, maxBytes: Infinity }, createLogger('silent'));
  const messages = 50_000;
  const events = (id: string): TraceEvent[] => {
    const at = new Date().toISOString();
    const reply = '250 2.6.0 <7F2A1C@example.com> Queued mail for delivery';
    return [
      { at, event: 'received', id, account: 'office', mode: 'queue', user: 'printer-2f', clientIp: '192.0.2.10', size: 10_240, from: 'mfp@printers.local', sentAs: 'scanner@contoso.com', to: ['alice@contoso.com'], subject: 'Scan 2026-11-23 10:05' },
      { at, event: 'attempt', id, account: 'office', result: 'delivered', reply, recipients: [{ address: 'alice@contoso.com', reply }], durationMs: 12 },
      { at, event: 'final', id, account: 'office', status: 'delivered' },
    ];
  };
  const started = performance.now();
  for (let n = 0; n < messages; n++) for (const event of events(`M${n}`)) log.record(event);
  await log.close();
  const ms = (performance.now() - started) / messages;
  await rm(dir, { recursive: true, force: true });
  return ms;
}
