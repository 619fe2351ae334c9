import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { LoadedConfig } from '../config/index.js';
import { TokenStore } from '../oauth/index.js';
import { deviceCodeSignIn, redeemAuthorizationCode, saveSignIn, SignInError, startAuthorization } from '../oauth/sign-in.js';

const BROWSER_TIMEOUT_MS = 10 * 60 * 1000;

/**
 * `login ACCOUNT`: signs the account in and stores its refresh token where the relay (running or
 * not) looks first. Device code where the provider offers it for mail (Microsoft), otherwise the
 * browser with PKCE and a loopback redirect (Google).
 */
export async function login(loaded: LoadedConfig, name: string, options: { browser: boolean; write: (text: string) => void }): Promise<void> {
  const account = loaded.accounts.get(name);
  if (!account) throw new SignInError(`no account named "${name}"`, `accounts are: ${[...loaded.accounts.keys()].join(', ')}`);
  if (account.flow !== 'refresh_token') throw new SignInError(`accounts.${name} uses flow ${account.flow}`, 'only flow refresh_token needs a sign-in');
  const store = new TokenStore(path.join(loaded.config.dataDir, 'tokens'), loaded.config.tokenKey);
  const { write } = options;
  let refreshToken: string;
  if (account.deviceCodeUrl && !options.browser) {
    refreshToken = await deviceCodeSignIn(account, (prompt) => {
      write(`\nSign in as ${account.mailbox}:\n  1. Open ${prompt.verificationUri}\n  2. Enter the code ${prompt.userCode}\n  (the code is valid for ${Math.round(prompt.expiresInSeconds / 60)} minutes; waiting...)\n\n`);
    });
  } else {
    refreshToken = await browserSignIn(account, write);
  }
  await saveSignIn(store, account, refreshToken);
  write(`Signed in. The refresh token for ${name} is saved in ${store.fileFor(name)}${store.encrypted ? ' (encrypted)' : ''}; a running relay uses it at once.\n`);
}

async function browserSignIn(account: Parameters<typeof startAuthorization>[0], write: (text: string) => void): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const redirectUri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/callback`;
  const pending = startAuthorization(account, redirectUri);
  write(`\nOpen this address in a browser on this machine and sign in as ${account.mailbox}:\n\n  ${pending.url}\n\nWaiting for the sign-in to finish...\n`);
  try {
    return await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new SignInError('no sign-in within 10 minutes', 'run login again')), BROWSER_TIMEOUT_MS);
      server.on('request', (request, response) => {
        const url = new URL(request.url ?? '/', redirectUri);
        if (url.pathname !== '/callback') return void response.writeHead(404).end();
        const finish = (status: number, text: string) => response.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' }).end(text);
        if (url.searchParams.get('state') !== pending.state) return finish(400, 'This sign-in does not belong to the waiting login; start it again.');
        clearTimeout(timer);
        const error = url.searchParams.get('error');
        if (error) {
          finish(400, `Sign-in failed: ${error}. You can close this tab.`);
          return reject(new SignInError(`the provider answered ${error}: ${url.searchParams.get('error_description') ?? ''}`, 'run login again and accept the permissions'));
        }
        redeemAuthorizationCode(account, pending, url.searchParams.get('code') ?? '').then(
          (token) => {
            finish(200, 'Signed in. You can close this tab.');
            resolve(token);
          },
          (redeemError: Error) => {
            finish(400, `Sign-in failed: ${redeemError.message}`);
            reject(redeemError);
          },
        );
      });
    });
  } finally {
    server.close();
  }
}
