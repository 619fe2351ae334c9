import { open, rename, mkdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Writes a file so that a crash at any instant leaves either the old content or the new one:
 * a temporary file beside it, fsynced, renamed over the target, then the folder fsynced so the
 * rename itself survives a power cut.
 */
export async function writeFileAtomic(target: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  await replaceFile(target, data, mode);
  await syncDirectory(path.dirname(target));
}

/**
 * The first half of writeFileAtomic: the new content is durable and renamed into place, but the
 * rename itself is durable only once the caller fsyncs the folder (which may cover many renames).
 */
export async function replaceFile(target: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const dir = path.dirname(target);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const temporary = path.join(dir, `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temporary, 'w', mode);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await unlink(temporary).catch(() => undefined);
    throw error;
  }
  await handle.close();
  await rename(temporary, target);
}

/**
 * Makes the renames done in a folder so far durable. Group commit: one fsync of a folder covers
 * every rename before it began, so concurrent callers share it; a caller that arrives while one is
 * running (which may have begun before its rename) joins the next, which starts right after.
 */
export function syncDirectory(dir: string): Promise<void> {
  let group = groups.get(dir);
  if (!group) groups.set(dir, (group = new GroupSync(dir)));
  return group.sync();
}

const groups = new Map<string, GroupSync>();

class GroupSync {
  private running?: Promise<void>;
  private next?: Promise<void>;

  constructor(private readonly dir: string) {}

  sync(): Promise<void> {
    if (!this.running) return this.start();
    const startNext = () => {
      this.next = undefined;
      return this.start();
    };
    this.next ??= this.running.then(startNext, startNext);
    return this.next;
  }

  private start(): Promise<void> {
    const run = fsyncFolder(this.dir).finally(() => {
      if (this.running === run) this.running = undefined;
    });
    this.running = run;
    return run;
  }
}

async function fsyncFolder(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
