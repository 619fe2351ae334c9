import { describe, expect, it } from 'vitest';
import { MinHeap } from '../src/util/min-heap.js';

describe('the delivery schedule (min-heap)', () => {
  it('gives back 10,000 random times in order', () => {
    const heap = new MinHeap<{ at: number }>();
    const times = Array.from({ length: 10_000 }, () => Math.floor(Math.random() * 1e9));
    for (const at of times) heap.push({ at });
    const out: number[] = [];
    for (let item = heap.pop(); item; item = heap.pop()) out.push(item.at);
    expect(out).toEqual([...times].sort((a, b) => a - b));
    expect(heap.size).toBe(0);
  });
});
