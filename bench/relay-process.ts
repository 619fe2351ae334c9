import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';

const CLI = path.resolve('dist/src/cli/main.js');

/** The relay as a real process, restartable; start() resolves once it logs that it listens (log level info or lower). */
export class RelayProcess {
  child?: ChildProcess;
  port = 0;
  httpPort = 0;

  /** nodeOptions: flags for Node itself, e.g. a diagnostic one a test needs. */
  constructor(
    private readonly configFile: string,
    private readonly nodeOptions: string[] = [],
  ) {}

  start(): Promise<void> {
    const child = spawn(process.execPath, [...this.nodeOptions, CLI, 'serve', '--config', this.configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
    return new Promise((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`relay exited early (${code}): ${stderr}`)));
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const entry = JSON.parse(line) as { msg?: string; smtp?: string; http?: string };
        if (entry.msg === 'smtp-oauth-relay listening') {
          this.port = Number(entry.smtp!.split(':').pop());
          this.httpPort = Number(entry.http!.split(':').pop());
          resolve();
        }
      });
    });
  }

  stop(signal: NodeJS.Signals): Promise<number | null> {
    const child = this.child!;
    child.removeAllListeners('exit');
    return new Promise((resolve) => {
      child.once('exit', (code) => resolve(code));
      child.kill(signal);
    });
  }
}

