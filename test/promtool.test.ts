import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { DEVICE, message, sendRaw, startProvider, startRelay, stopStarted } from './helpers.js';

/** Prometheus' own linter (Debian's prometheus package, for the promtool binary only). */
function promtool(args: string[], input: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('promtool', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    child.on('close', (code) => resolve({ code: code ?? -1, output }));
    child.stdin.end(input);
  });
}

describe('/metrics', () => {
  afterAll(stopStarted);

  it('passes `promtool check metrics` with no findings, on a relay that has done some work', async () => {
    const provider = await startProvider();
    const relay = await startRelay(provider);
    await sendRaw(relay.port, { from: 'scan@printers.local', to: ['alice@example.com'], raw: message(['Subject: scrape'], 'x') });
    await sendRaw(relay.port, { from: 'scan@printers.local', to: ['alice@example.com'], raw: message(['Subject: x'], 'x') }, { ...DEVICE, password: 'wrong' }).catch(() => undefined);
    const text = await (await fetch(`http://127.0.0.1:${relay.httpPort}/metrics`)).text();
    const result = await promtool(['check', 'metrics'], text);
    expect(result.output.trim()).toBe('');
    expect(result.code).toBe(0);
  });
});
