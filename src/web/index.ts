export { AdminPage, type AdminOptions } from './admin.js';
