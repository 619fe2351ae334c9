/**
 * The dotted key paths whose values differ between two configurations, down to the leaves
 * (a list counts as one leaf: `users`, `allowNetworks`). A reload names each one it cannot apply.
 */
export function changedKeys(before: unknown, after: unknown, at = ''): string[] {
  if (isTree(before) && isTree(after)) {
    const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
    return [...keys].flatMap((key) => changedKeys(before[key], after[key], at ? `${at}.${key}` : key));
  }
  return JSON.stringify(before) === JSON.stringify(after) ? [] : [at || '(everything)'];
}

function isTree(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
