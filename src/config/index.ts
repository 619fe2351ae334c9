export { loadConfigFile, parseConfig, readDataDir, ConfigError, type ConfigProblem, type LoadedConfig } from './load.js';
export type { Config, UserConfig } from './schema.js';
export type { ResolvedAccount, ResolvedUpstream, SendingLimits, TransportName } from './providers.js';
export { formatByteSize, formatDuration } from './size.js';
export { NetworkList } from './networks.js';
export { changedKeys } from './diff.js';
