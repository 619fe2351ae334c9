export { AdminPage, type AdminOptions } from './admin.js';
export type { AdminAccount, ConsoleSources, SpooledMessage } from './sources.js';
