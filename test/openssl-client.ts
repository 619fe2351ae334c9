import { spawn } from 'node:child_process';

/**
 * One `openssl s_client` session (Debian's OpenSSL 3) with lines typed into it a moment apart, as a
 * person would; resolves with everything it printed.
 */
export function sClient(args: string[], lines: string[] = ['QUIT'], gapMs = 400): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn('openssl', ['s_client', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    const timer = setTimeout(() => child.kill(), 20_000);
    child.on('close', () => {
      clearTimeout(timer);
      resolve(output);
    });
    lines.forEach((line, index) => setTimeout(() => child.stdin.writable && child.stdin.write(`${line}\n`), gapMs * (index + 1)));
    setTimeout(() => child.stdin.end(), gapMs * (lines.length + 1) + 800);
  });
}
