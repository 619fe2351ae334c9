import { deviceSender, load, startRelay } from './load.js';
import { record } from './report.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/**
 * What the delivery log costs: the same queue-mode load (printer-style, 10 devices) with
 * trace.enabled true and false, in interleaved repetitions (this machine drifts between runs),
 * compared by their medians.
 */
export async function traceCost(provider: FakeProvider): Promise<void> {
  const repetitions = Number(process.env.BENCH_REPETITIONS ?? 5);
  const rates: Record<'on' | 'off', number[]> = { on: [], off: [] };
  for (let run = 0; run < repetitions; run++) {
    for (const setting of run % 2 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
      const relay = await startRelay(provider, { delivery: 'queue', trace: { enabled: setting === 'on' }, smtp: { maxConnectionsPerIp: 1000, maxClients: 500 } });
      await load(() => deviceSender(relay.port, false), 50, 10); // warm-up
      rates[setting].push((await load(() => deviceSender(relay.port, false), 600, 10)).rate);
      await relay.stop('SIGTERM');
    }
  }
  const on = median(rates.on);
  const off = median(rates.off);
  record({ name: 'throughput queue printer-style c=10, delivery log on', value: on, unit: 'msg/s', baseline: off, ratio: on / off, target: '≥ 0.95 × log off', met: on / off >= 0.95 });
}
