import type { AccessTokens } from '../oauth/index.js';

/**
 * The relay's one way of logging in upstream: SASL XOAUTH2 with the token manager's access token.
 *
 * Exchange Online lists `AUTH LOGIN XOAUTH2` and Gmail `AUTH LOGIN PLAIN XOAUTH2 ...`. Given the
 * method name `XOAUTH2` without its own OAuth2 client, nodemailer picks "the first supported" of
 * PLAIN, LOGIN, CRAM-MD5, XOAUTH2 itself and sends a basic login, which the providers refuse (and
 * count against the mailbox's sign-in protection). Under a method name nodemailer does not know,
 * the handler below is called whatever the server lists, and it alone decides what is sent.
 */
export const RELAY_LOGIN_METHOD = 'RELAY-XOAUTH2';

/** What nodemailer hands a custom login handler. */
export interface LoginContext {
  /** The mechanisms nodemailer recognised in the EHLO (only PLAIN, LOGIN, CRAM-MD5, XOAUTH2). */
  authMethods: string[];
  sendCommand(command: string): Promise<{ status: number; response: string }>;
}

/** The upstream refused the relay's XOAUTH2 login with this reply (the token was already dropped). */
export class XOAuth2Rejected extends Error {
  constructor(readonly response: string) {
    super(`XOAUTH2 refused: ${response}`);
    this.name = 'XOAuth2Rejected';
  }
}

/**
 * The upstream does not offer XOAUTH2 after STARTTLS, so the relay did not log in at all: it never
 * falls back to a password mechanism. `offered` is the server's AUTH list as it sent it.
 */
export class NoXOAuth2Offered extends Error {
  constructor(readonly offered: string[]) {
    super(`upstream offers no XOAUTH2 (it offers ${offered.length ? offered.join(' ') : 'no AUTH at all'})`);
    this.name = 'NoXOAuth2Offered';
  }
}

/** The initial response of RFC 7628-style XOAUTH2: user, bearer token, two ^A at the end. */
export function xoauth2InitialResponse(mailbox: string, token: string): string {
  return Buffer.from(`user=${mailbox}\x01auth=Bearer ${token}\x01\x01`).toString('base64');
}

export async function logInWithXOAuth2(ctx: LoginContext, mailbox: string, tokens: AccessTokens, hostname: string): Promise<void> {
  if (!ctx.authMethods.includes('XOAUTH2')) throw new NoXOAuth2Offered(await advertisedMechanisms(ctx, hostname));
  const token = await tokens.getToken();
  let reply = await ctx.sendCommand(`AUTH XOAUTH2 ${xoauth2InitialResponse(mailbox, token)}`);
  if (reply.status === 334) {
    // Gmail reports the failure as a base64 JSON challenge that must be answered with an empty line.
    reply = await ctx.sendCommand('');
  }
  if (reply.status !== 235) {
    tokens.invalidate(token);
    throw new XOAuth2Rejected(reply.response);
  }
}

/**
 * The server's whole AUTH list, for the operator's hint (nodemailer keeps only the four names it
 * knows). Asked with a second EHLO, which RFC 5321 4.1.4 allows at any time; this path only runs
 * when the account cannot send anyway.
 */
async function advertisedMechanisms(ctx: LoginContext, hostname: string): Promise<string[]> {
  try {
    const { response } = await ctx.sendCommand(`EHLO ${hostname}`);
    const line = response.split(/\r?\n/).find((entry) => /^(?:\d{3}[ -])?AUTH[ =]/i.test(entry));
    return line ? line.replace(/^(?:\d{3}[ -])?AUTH[ =]/i, '').split(/[\s=]+/).filter(Boolean) : [];
  } catch {
    return ctx.authMethods;
  }
}
