import { MAILBOX } from './helpers.js';

/** A second address the account may send as, in the tests that use header shapes. */
export const SHARED = 'shared-scans@contoso.test';

const NAMES = ['From', 'from', 'FROM', 'fRoM', 'Sender', 'Reply-To', 'Subject', 'X-From', 'From-X'];
const VALUES = [
  `ceo@contoso.test`,
  `<${SHARED}>`,
  `${SHARED}`,
  `"${SHARED}" <ceo@contoso.test>`,
  `Staff: ${SHARED};`,
  `${SHARED}, ceo@contoso.test`,
  `=?utf-8?B?${Buffer.from(`${SHARED}`).toString('base64')}?= <ceo@contoso.test>`,
  `=?utf-8?Q?J=C3=B6rg?= <${SHARED}>`,
  `(${SHARED}) ceo@contoso.test`,
  `ceo@contoso.test\r\n\t<${SHARED}>`,
  '',
];

/** A seeded generator, so a failing shape can be reproduced. */
export function seeded(seed: number): () => number {
  let state = seed;
  return () => (state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}

const pick = <T>(items: readonly T[], random: () => number) => items[Math.floor(random() * items.length)];

/**
 * A message whose header has a random shape: white space and case around field names, folding,
 * several From fields, groups, lists, comments, encoded words, a non-field first line, a missing
 * empty line.
 */
export function randomHeaderMessage(random: () => number): Buffer {
  const lines: string[] = [];
  if (random() < 0.1) lines.push(pick(['From someone@x Mon Jan 1 00:00:00 2024', 'POST / HTTP/1.1', ' continued', 'garbage'], random));
  const count = 1 + Math.floor(random() * 5);
  for (let i = 0; i < count; i++) {
    const space = pick(['', ' ', '\t', '  ', ' \t'], random);
    const fold = random() < 0.2 ? '\r\n ' : pick(['', ' ', '\t'], random);
    lines.push(`${pick(NAMES, random)}${space}:${fold}${pick(VALUES, random)}`);
  }
  const ending = pick(['\r\n\r\nbody\r\n', '\r\nbody without blank line\r\n', '\r\n', ''], random);
  return Buffer.from(lines.join('\r\n') + ending, 'latin1');
}

/**
 * What a receiving MTA makes of the header: the lines up to the first empty line, each a field
 * (name, optional white space, colon) or a continuation. Written independently of the relay's parser.
 */
export function downstreamView(raw: Buffer): { fields: { name: string; value: string }[]; body: Buffer; stray: string[] } {
  const end = raw.indexOf('\r\n\r\n');
  const head = raw.subarray(0, end).toString('latin1');
  const fields: { name: string; value: string }[] = [];
  const stray: string[] = [];
  for (const line of head.split('\r\n')) {
    const field = /^([!-9;-~]+)[ \t]*:(.*)$/s.exec(line);
    if (field) fields.push({ name: field[1].toLowerCase(), value: field[2] });
    else if (/^[ \t]/.test(line) && fields.length) fields[fields.length - 1].value += line;
    else stray.push(line);
  }
  return { fields, body: raw.subarray(end + 4), stray };
}

/** Problems with what left the relay: not exactly one From, not an allowed one, Sender or several Reply-To. */
export function senderProblems(raw: Buffer, allowed: readonly string[] = [MAILBOX]): string[] {
  const view = downstreamView(raw);
  const from = view.fields.filter((field) => field.name === 'from').map((field) => field.value.replace(/\s+/g, ' ').trim());
  const problems: string[] = [];
  if (view.stray.length) problems.push(`lines that are no field: ${JSON.stringify(view.stray)}`);
  if (from.length !== 1) problems.push(`${from.length} From fields`);
  else if (!allowed.some((address) => from[0] === address || from[0].endsWith(`<${address}>`))) problems.push(`From not allowed: ${from[0]}`);
  else if (!from[0].includes(MAILBOX) && /[,;()]|@.*@/.test(from[0])) problems.push(`kept From holds more than one mailbox: ${from[0]}`);
  if (view.fields.some((field) => field.name === 'sender')) problems.push('a Sender field');
  if (view.fields.filter((field) => field.name === 'reply-to').length > 1) problems.push('several Reply-To fields');
  return problems;
}
