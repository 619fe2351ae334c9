import { createHash, createPrivateKey, webcrypto } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import 'reflect-metadata'; // @peculiar/x509 resolves its services through tsyringe, which needs it first
import * as x509 from '@peculiar/x509';
import type { LoadedConfig } from '../config/index.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALGORITHM = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 3072 };

/**
 * `credentials create-certificate ACCOUNT [--days N]`: a key and a self-signed certificate for
 * Microsoft's certificate credentials, in dataDir/credentials (mode 0600), named by date so that a
 * new one can be uploaded beside the old one before the switch. Prints what to upload and set.
 */
export async function createCertificate(loaded: LoadedConfig, name: string, days: number): Promise<string> {
  const account = loaded.accounts.get(name);
  if (!account) throw new Error(`no account "${name}" in ${loaded.source}`);
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const notBefore = new Date();
  const notAfter = new Date(notBefore.getTime() + days * 86_400_000);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^[89a-f]/, '1'),
    name: `CN=smtp-oauth-relay ${name}`,
    notBefore,
    notAfter,
    signingAlgorithm: ALGORITHM,
    keys: keys as webcrypto.CryptoKeyPair,
    extensions: [new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true)],
  });
  const folder = path.join(loaded.config.dataDir, 'credentials');
  await mkdir(folder, { recursive: true, mode: 0o700 });
  const base = path.join(folder, `${name}-${notBefore.toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-')}`);
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', (keys as webcrypto.CryptoKeyPair).privateKey));
  const keyPem = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' });
  const der = Buffer.from(certificate.rawData);
  await writeFile(`${base}.key`, keyPem, { mode: 0o600, flag: 'wx' });
  await writeFile(`${base}.pem`, certificate.toString('pem') + '\n', { mode: 0o600, flag: 'wx' });
  await writeFile(`${base}.cer`, der, { mode: 0o644, flag: 'wx' });
  const thumbprint = createHash('sha1').update(der).digest('hex').toUpperCase();
  return [
    `Certificate for accounts.${name}, valid until ${notAfter.toISOString().slice(0, 10)} (${days} days).`,
    '',
    `Upload in Entra: App registrations > (your app) > Certificates & secrets > Certificates > Upload:`,
    `  ${base}.cer   (thumbprint ${thumbprint}, as Entra will show it)`,
    '',
    'Then set in the config and reload (SIGHUP) or restart:',
    `  accounts.${name}.clientCertificateFile: ${base}.pem`,
    `  accounts.${name}.clientKeyFile: ${base}.key`,
    '  (and remove clientSecret). The relay warns 30 days before the certificate expires.',
    '',
  ].join('\n');
}
