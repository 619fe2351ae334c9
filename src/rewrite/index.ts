export { SenderRewriter } from './sender-rewriter.js';
export { SizeGuard } from './size-guard.js';
export type { SenderRules, SenderDecision } from './headers.js';
export { LineEndingGuard, type LineEndingPolicy } from './line-endings.js';
