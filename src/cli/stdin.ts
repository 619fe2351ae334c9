import { createInterface } from 'node:readline';

/**
 * One line from stdin: typed at a prompt that does not echo it, or piped
 * (`echo -n secret | smtp-oauth-relay hash-password`).
 */
export async function readSecretFromStdin(prompt: string): Promise<string> {
  const input = process.stdin;
  if (!input.isTTY) {
    let text = '';
    for await (const chunk of input) text += chunk;
    return text.replace(/\r?\n$/, '');
  }
  process.stderr.write(prompt);
  const rl = createInterface({ input, terminal: true });
  (rl as unknown as { _writeToOutput: () => void })._writeToOutput = () => undefined;
  const line = await new Promise<string>((resolve) => rl.once('line', resolve));
  rl.close();
  process.stderr.write('\n');
  return line;
}
