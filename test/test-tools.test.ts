import { mkdtemp, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { execFileAsync } from './helpers.js';

/** `npm test` first checks the tools the suite drives, and says in one message what is missing and how to get it. */
describe('the test tools check', () => {
  it('passes where every tool is there (.ci/run installed them)', async () => {
    await expect(execFileAsync('bash', ['.ci/test-tools', 'check'])).resolves.toBeDefined();
  });

  it('names each missing tool, what the tests use it for, its Debian package and the one command that installs them', async () => {
    // A PATH with the shell's basic tools but none of the suite's (no swaks, curl, python3, redis-server, ...).
    const bin = await mkdtemp(path.join(os.tmpdir(), 'bare-path-'));
    for (const tool of ['grep', 'ls', 'perl']) await symlink(path.join('/usr/bin', tool), path.join(bin, tool));
    const failure = await execFileAsync('/bin/bash', ['.ci/test-tools', 'check'], { env: { PATH: bin } }).then(
      () => undefined,
      (error: { code: number; stderr: string }) => error,
    );
    expect(failure?.code).toBe(1);
    expect(failure?.stderr).toContain('the cluster tests\' real Redis (Debian package: redis-server)');
    expect(failure?.stderr).toContain('swaks with STARTTLS, as a device (Debian package: swaks libnet-ssleay-perl libio-socket-ssl-perl)');
    expect(failure?.stderr).toMatch(/sudo apt-get install -y --no-install-recommends swaks .*redis-server/);
    expect(failure?.stderr).toContain('npm run test:ci');
  });
});
