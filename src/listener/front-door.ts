import { clientKey } from './auth-guard.js';

/** How long an address counts as a known device after a login from it succeeded. */
const KNOWN_FOR_MS = 24 * 3600_000;
/** Known addresses remembered at most (the oldest are forgotten first). */
const MAX_KNOWN = 10_000;
/** The share of smtp.maxClients kept for known devices while strangers fill the rest. */
export const RESERVED_SHARE = 0.2;

export interface FrontDoorLimits {
  maxClients: number;
  /** Sessions not logged in yet, per client address (smtp.maxUnauthenticatedPerIp). */
  maxUnauthenticatedPerIp: number;
}

export type Admission = { admitted: true } | { admitted: false; reason: string };

/**
 * Who gets a session when the listener is busy. Sessions that have not logged in are limited per
 * address, and the last fifth of maxClients is kept for addresses a device logged in from lately:
 * idle strangers holding connections cannot lock the printers out (each also has smtp.authTimeout
 * to log in, see the listener).
 */
export class FrontDoor {
  private open = 0;
  private readonly waiting = new Map<string, number>();
  private readonly known = new Map<string, number>();

  constructor(private limits: FrontDoorLimits) {}

  setLimits(limits: FrontDoorLimits): void {
    this.limits = limits;
  }

  /** A new connection from `ip`: admitted (and counted as waiting to log in) or refused with why. */
  admit(ip: string, now = Date.now()): Admission {
    const client = clientKey(ip);
    const known = (this.known.get(client) ?? 0) > now - KNOWN_FOR_MS;
    if (!known && this.open >= Math.ceil(this.limits.maxClients * (1 - RESERVED_SHARE))) return { admitted: false, reason: 'The relay is busy; try again in a moment' };
    const waiting = this.waiting.get(client) ?? 0;
    if (waiting >= this.limits.maxUnauthenticatedPerIp) return { admitted: false, reason: 'Too many sessions waiting to log in from your address; try again later' };
    this.open++;
    this.waiting.set(client, waiting + 1);
    return { admitted: true };
  }

  /** The session logged in (or was let in by its network): no longer waiting; its address is a known device. */
  loggedIn(ip: string, now = Date.now()): void {
    const client = clientKey(ip);
    this.leaveWaiting(client);
    this.known.delete(client);
    if (this.known.size >= MAX_KNOWN) this.known.delete(this.known.keys().next().value!);
    this.known.set(client, now);
  }

  /** An admitted session ended; `waiting` if it never logged in. */
  closed(ip: string, waiting: boolean): void {
    this.open = Math.max(0, this.open - 1);
    if (waiting) this.leaveWaiting(clientKey(ip));
  }

  private leaveWaiting(client: string): void {
    const left = (this.waiting.get(client) ?? 1) - 1;
    if (left > 0) this.waiting.set(client, left);
    else this.waiting.delete(client);
  }
}
