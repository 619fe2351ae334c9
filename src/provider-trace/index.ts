export { ExchangeMessageTrace, type ProviderTraceEntry, type ProviderTraceResult } from './exchange-trace.js';
