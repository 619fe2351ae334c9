import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { message, sendRaw, startProvider, until, writeRelayConfig } from './helpers.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';

/*
 * The commit point, seen from the kernel: the relay runs under strace, and the order of its system
 * calls must show that a queued message's file reached the disk (fdatasync), was renamed into
 * queue/ and the folder fsynced before "250 ... queued as" was written to the device. A SIGKILL
 * test cannot show this (the page cache survives a killed process; only a power cut loses it).
 */

const CLI = path.resolve('dist/src/cli/main.js');
const canTrace = (() => {
  try {
    execFileSync('strace', ['-f', '-e', 'trace=none', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    console.warn('commit-order test skipped: strace cannot trace here (not installed, or ptrace not permitted)');
    return false;
  }
})();

describe.skipIf(!canTrace)('a 250 in queue mode comes after the message is on disk', () => {
  let provider: FakeProvider;
  let child: ChildProcess | undefined;

  afterAll(async () => {
    if (child?.pid) process.kill(-child.pid, 'SIGKILL'); // strace and the relay it started (its own process group)
    await provider?.stop();
  });

  it('fdatasync of the queue file, then its rename into queue/, then an fsync of queue/, then the 250', async () => {
    provider = await startProvider();
    provider.refuseConnections = true; // the messages stay queued: only the commit is traced
    const { configFile, dataDir } = await writeRelayConfig(provider, { delivery: 'queue' });
    const trace = path.join(await mkdtemp(path.join(os.tmpdir(), 'relay-strace-')), 'trace');
    child = spawn('strace', ['-f', '-qq', '-s', '80', '-e', 'trace=openat,fdatasync,fsync,rename,renameat,renameat2,write,writev', '-o', trace, process.execPath, CLI, 'serve', '--config', configFile], {
      stdio: ['ignore', 'pipe', 'inherit'],
      detached: true,
    });
    const port = await new Promise<number>((resolve) =>
      createInterface({ input: child!.stdout! }).on('line', (line) => {
        const smtp = (JSON.parse(line) as { smtp?: string }).smtp;
        if (smtp) resolve(Number(smtp.split(':').pop()));
      }),
    );
    const ids: string[] = [];
    for (let n = 0; n < 5; n++) {
      const info = await sendRaw(port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['From: mfp@printers.local', `Subject: traced ${n}`], 'body') });
      ids.push(/queued as ([0-9A-Z]+)/.exec(info.response)![1]);
    }
    await until(async () => (await readFile(trace, 'utf8')).includes(`queued as ${ids[4]}`));
    const calls = parseTrace(await readFile(trace, 'utf8'));
    const queueDir = path.join(dataDir, 'spool', 'queue');
    for (const id of ids) {
      const find = (what: string, test: (call: Call) => boolean, after = -1) => {
        const call = calls.find((candidate) => candidate.start > after && test(candidate));
        expect(call, what).toBeDefined();
        return call!;
      };
      const created = find(`${id}: its queue file created in incoming/`, (call) => call.name === 'openat' && call.args.includes(`incoming/${id}.msg"`));
      const synced = find(`${id}: fdatasync of its queue file`, (call) => call.name === 'fdatasync' && call.args === created.result, created.end);
      const renamed = find(`${id}: renamed into queue/`, (call) => call.name.startsWith('rename') && call.args.includes(`incoming/${id}.msg"`) && call.args.includes(`"${queueDir}/${id}.msg"`));
      const replied = find(`${id}: the 250 written to the device`, (call) => call.name.startsWith('write') && call.args.includes(`queued as ${id}`));
      expect(synced.end, `${id}: data on disk before the rename`).toBeLessThan(renamed.start);
      expect(renamed.end, `${id}: renamed before the 250`).toBeLessThan(replied.start);
      // The folder's fsync began after the rename and ended before the 250 (one may cover several renames).
      const folderSync = calls.find((call) => call.name === 'fsync' && call.start > renamed.end && call.end < replied.start && directoryFds(calls, queueDir, call.start).has(call.args));
      expect(folderSync, `${id}: queue/ fsynced between the rename and the 250`).toBeDefined();
    }
  }, 60_000);
});

interface Call {
  name: string;
  args: string;
  result: string;
  /** Line numbers where the call began and ended (the same for a call strace printed whole). */
  start: number;
  end: number;
}

/** strace -f output as calls, with calls split by another thread ("<unfinished ...>" / "<... resumed>") joined again. */
function parseTrace(text: string): Call[] {
  const calls: Call[] = [];
  const open = new Map<string, Call>();
  text.split('\n').forEach((line, index) => {
    const resumed = /^(\d+) +<\.\.\. (\w+) resumed>(.*?)\) += (-?\w+)/.exec(line);
    if (resumed) {
      const call = open.get(resumed[1]);
      open.delete(resumed[1]);
      if (call) Object.assign(call, { args: call.args + resumed[3], result: resumed[4], end: index });
      return;
    }
    const began = /^(\d+) +(\w+)\((.*?)(?: <unfinished \.\.\.>|\) += (-?\w+).*)$/.exec(line);
    if (!began) return;
    const call = { name: began[2], args: began[3], result: began[4] ?? '', start: index, end: index };
    calls.push(call);
    if (began[4] === undefined) open.set(began[1], call);
  });
  return calls;
}

/** Descriptors open on the folder at a point of the trace (opened before it). */
function directoryFds(calls: Call[], folder: string, before: number): Set<string> {
  return new Set(calls.filter((call) => call.name === 'openat' && call.end < before && call.args.includes(`"${folder}"`)).map((call) => call.result));
}
