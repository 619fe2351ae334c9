import { Spool, pendingRecipients, readHeaderBlock, summarizeMessage, type MessageSummary, type QueueRecord } from '../spool/index.js';
import { askDaemon } from '../control/index.js';

/**
 * The mailq / postqueue jobs. Reading works on the spool files. Changes go through the running
 * daemon (its control socket), which owns the records while it runs; without a daemon the CLI
 * changes the files itself.
 */
export async function queueCommand(dataDir: string, args: string[], all: boolean): Promise<{ code: number; output: string }> {
  const spool = new Spool(dataDir);
  const [action = 'list', id] = args;
  if (id !== undefined && !/^[0-9A-Z]{6,40}$/.test(id)) return { code: 2, output: `"${id}" is not a queue id (see: smtp-oauth-relay queue list)\n` };
  switch (action) {
    case 'list':
      return { code: 0, output: formatList(await spool.list('queue'), 'queue') };
    case 'failed':
      return { code: 0, output: formatList(await spool.list('failed'), 'failed') };
    case 'show': {
      if (!id) return usage();
      const area = (await spool.read(id)) ? 'queue' : 'failed';
      const record = await spool.read(id, area);
      if (!record) return notFound(id);
      const headers = await readHeaderBlock(spool.openMessage(record, area));
      const summary = await summarizeMessage(spool.openMessage(record, area)).catch((error: Error) => error);
      return { code: 0, output: `${formatSummary(summary)}\n${JSON.stringify({ area, ...record }, null, 2)}\n\n${headers.toString('utf8')}` };
    }
    case 'retry': {
      if (!all && !id) return usage();
      const byDaemon = await askDaemon(dataDir, { op: 'queue-retry', id: all ? undefined : id });
      if (byDaemon) return byDaemon;
      const records = all ? await spool.list('queue') : [await spool.read(id!)].filter((r): r is QueueRecord => !!r);
      if (!all && records.length === 0) return notFound(id!);
      const now = new Date().toISOString();
      for (const record of records) await spool.save({ ...record, nextAttemptAt: now });
      return { code: 0, output: `${records.length} message(s) scheduled for delivery now\n` };
    }
    case 'delete': {
      if (!id) return usage();
      const byDaemon = await askDaemon(dataDir, { op: 'queue-delete', id });
      if (byDaemon) return byDaemon;
      await spool.init();
      const area = await spool.deleteMessage(id);
      return area ? { code: 0, output: `${id} deleted from ${area}\n` } : notFound(id);
    }
    default:
      return usage();
  }
}

/** What a user would recognise: subject, sender, attachments (names, types, sizes). */
function formatSummary(summary: MessageSummary | Error): string {
  if (summary instanceof Error) return `Summary: the message cannot be parsed (${summary.message})\n`;
  const lines = [
    `Subject:     ${summary.subject ?? '(none)'}`,
    `From:        ${summary.from ?? '(none)'}`,
    `To:          ${summary.to ?? '(none)'}`,
    `Date:        ${summary.date ?? '(none)'}`,
    `Attachments: ${summary.attachments.length === 0 ? 'none' : ''}`,
    ...summary.attachments.map((attachment) => `  ${attachment.filename ?? '(no name)'}  ${attachment.contentType}  ${attachment.size} bytes`),
  ];
  if (summary.incomplete) lines.push(`(incomplete: ${summary.incomplete})`);
  return `${lines.join('\n')}\n`;
}

function formatList(records: QueueRecord[], area: 'queue' | 'failed'): string {
  if (records.length === 0) return area === 'queue' ? 'Queue is empty.\n' : 'No failed messages.\n';
  records.sort((a, b) => a.receivedAt.localeCompare(b.receivedAt));
  const now = Date.now();
  const rows = records.map((record) => [
    record.id,
    record.account,
    age(now - Date.parse(record.receivedAt)),
    String(record.attempts),
    area === 'queue' ? nextTry(record.nextAttemptAt, now) : record.failedAt ?? '',
    String(area === 'queue' ? pendingRecipients(record).length : record.failedRecipients.length),
    (record.lastReply ?? '').replace(/\s+/g, ' ').slice(0, 100),
  ]);
  const header = ['ID', 'ACCOUNT', 'AGE', 'ATTEMPTS', area === 'queue' ? 'NEXT TRY' : 'FAILED AT', 'RCPTS', 'LAST REPLY'];
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column].length)));
  const line = (cells: string[]) => cells.map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column]))).join('  ');
  const bytes = records.reduce((sum, record) => sum + record.size, 0);
  return [line(header), ...rows.map(line), '', `${records.length} message(s), ${bytes} bytes`, ''].join('\n');
}

function age(ms: number): string {
  const minutes = Math.floor(ms / 60_000);
  if (minutes < 1) return `${Math.floor(ms / 1000)}s`;
  if (minutes < 120) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  return hours < 48 ? `${hours}h` : `${Math.floor(hours / 24)}d`;
}

function nextTry(at: string, now: number): string {
  const ms = Date.parse(at) - now;
  return ms <= 0 ? 'now' : `in ${age(ms)}`;
}

const usage = () => ({ code: 2, output: 'Usage: smtp-oauth-relay queue [list | failed | show ID | retry ID | retry --all | delete ID] [--config FILE]\n' });
const notFound = (id: string) => ({ code: 1, output: `${id}: no such message in the queue or the failed area\n` });
