import { readFileSync, readdirSync } from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat's times (USER_HZ: 100 on Linux). */
const TICKS = 100;

interface ProcessTimes {
  parent: number;
  /** Its own CPU (user + system) and that of its children it has reaped, in ticks. */
  ticks: number;
}

function timesOf(pid: number): ProcessTimes | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return { parent: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]) };
  } catch {
    return undefined; // it exited meanwhile: its time is in its parent's reaped children
  }
}

/**
 * CPU seconds (user + system) a process and all its descendants have used so far, those that
 * exited included (their time is in their parent's reaped-children times): Postfix's smtpd,
 * cleanup, qmgr and smtp under its master, or the relay's workers.
 */
export function treeCpuSeconds(root: number): number {
  let ticks = 0;
  for (const times of processTree(root).values()) ticks += times.ticks;
  return ticks / TICKS;
}

/** Resident memory of a process and all its descendants now (the relay and its workers), in bytes. */
export function treeRssBytes(root: number): number {
  let bytes = 0;
  for (const pid of processTree(root).keys()) {
    const status = readFileSyncOrEmpty(`/proc/${pid}/status`);
    bytes += Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
  }
  return bytes;
}

/** A process and its descendants alive now, with their times. */
function processTree(root: number): Map<number, ProcessTimes> {
  const all = new Map<number, ProcessTimes>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const times = timesOf(Number(entry));
    if (times) all.set(Number(entry), times);
  }
  const inTree = (pid: number): boolean => pid === root || (pid > 1 && all.has(pid) && inTree(all.get(pid)!.parent));
  return new Map([...all].filter(([pid]) => inTree(pid)));
}

function readFileSyncOrEmpty(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return ''; // it exited meanwhile
  }
}
