import { BlockList, isIP } from 'node:net';

export interface Network {
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
}

/** "192.168.10.0/24" or a single address; undefined when it is neither. */
export function parseNetwork(text: string): Network | undefined {
  const [address, prefixText] = text.trim().split('/');
  const version = isIP(address);
  if (!version) return undefined;
  const max = version === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (prefixText !== undefined && !/^\d+$/.test(prefixText))) return undefined;
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' };
}

/** A set of networks that answers "is this client address in it?" (IPv4-mapped IPv6 included). */
export class NetworkList {
  private readonly list = new BlockList();
  readonly empty: boolean;

  constructor(networks: readonly string[]) {
    for (const text of networks) {
      const network = parseNetwork(text);
      if (network) this.list.addSubnet(network.address, network.prefix, network.family);
    }
    this.empty = networks.length === 0;
  }

  has(clientAddress: string): boolean {
    const address = clientAddress.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
    const version = isIP(address);
    if (!version) return false;
    return this.list.check(address, version === 4 ? 'ipv4' : 'ipv6');
  }
}
