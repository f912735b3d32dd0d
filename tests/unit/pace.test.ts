// The pacing of bounded pauses (src/pace.ts) against a simulated target whose sessions cost
// fixed + per call + per byte, with scheduling hiccups on top: every range is covered once,
// in order, and sessions fill the budget without exceeding about twice it.
import { SyscallOp } from "../../src/native";
import { RangeCursor, SessionPacer } from "../../src/pace";
import { ChunkableRange } from "../../src/plan";

const MLOCK2 = 325;
const MUNLOCK = 150;
const MS = 1e6;

function small(count: number): ChunkableRange[] {
  return Array.from({ length: count }, (_, i) => ({ nr: MLOCK2, start: BigInt(0x10000000 + i * 8192), end: BigInt(0x10000000 + i * 8192 + 4096), extraArgs: [0n], undoNr: MUNLOCK }));
}

interface Cost {
  fixedNs: number;
  perCallNs: number;
  perByteNs: number;
  /** Every n-th session (or the ones listed) is held this much longer by the scheduler. */
  hiccup?: { every?: number; at?: number[]; ns: number };
}

function simulate(ranges: ChunkableRange[], budgetNs: number, cost: Cost): { sessions: SyscallOp[][]; pauses: number[] } {
  const pacer = new SessionPacer(budgetNs);
  const cursor = new RangeCursor(ranges);
  const sessions: SyscallOp[][] = [];
  const pauses: number[] = [];
  while (!cursor.done) {
    const ops = pacer.next(cursor);
    const callNs = ops.map((op) => cost.perCallNs + Number(op.args[1]) * cost.perByteNs);
    const h = cost.hiccup;
    const hiccup = h && ((h.every && sessions.length % h.every === h.every - 1) || h.at?.includes(sessions.length)) ? h.ns : 0;
    const pauseNs = cost.fixedNs + callNs.reduce((a, b) => a + b, 0) + hiccup;
    pacer.learn(ops, { pauseNs, callNs });
    sessions.push(ops);
    pauses.push(pauseNs - hiccup);
  }
  return { sessions, pauses };
}

function covered(sessions: SyscallOp[][]): Array<[bigint, bigint]> {
  const out: Array<[bigint, bigint]> = [];
  for (const op of sessions.flat()) {
    const last = out[out.length - 1];
    if (last && last[1] === op.args[0]) last[1] += op.args[1];
    else out.push([op.args[0], op.args[0] + op.args[1]]);
  }
  return out;
}

test("1,000 one-page mappings: a few sessions that fill the budget, each range exactly once, undo calls attached", () => {
  const ranges = small(1000);
  const { sessions, pauses } = simulate(ranges, 4 * MS, { fixedNs: 0.5 * MS, perCallNs: 40_000, perByteNs: 0.05 });
  expect(covered(sessions)).toEqual(ranges.map((r) => [r.start, r.end]));
  expect(sessions.flat().every((op) => op.undo?.nr === MUNLOCK && op.undo.args[1] === 4096n)).toBe(true);
  // 1,000 calls of 40 us: 40 ms of work in sessions of at most 4 ms -> at least 12.
  expect(sessions.length).toBeLessThanOrEqual(20);
  expect(Math.max(...pauses)).toBeLessThanOrEqual(8 * MS);
});

test("hiccups of the scheduler do not shrink the sessions to one call each", () => {
  const { sessions, pauses } = simulate(small(1000), 4 * MS, { fixedNs: 0.5 * MS, perCallNs: 40_000, perByteNs: 0.05, hiccup: { every: 3, ns: 15 * MS } });
  expect(sessions.length).toBeLessThanOrEqual(25);
  expect(Math.max(...pauses)).toBeLessThanOrEqual(8 * MS);
});

test("a hiccup in the first sessions, which measure the cost, does not leave every later session at one call", () => {
  const { sessions } = simulate(small(1000), 4 * MS, { fixedNs: 0.5 * MS, perCallNs: 40_000, perByteNs: 0.05, hiccup: { at: [0, 1, 2], ns: 50 * MS } });
  expect(sessions.length).toBeLessThanOrEqual(25);
});

test("one 2 GiB range, with hiccups: chunks stay large", () => {
  const ranges: ChunkableRange[] = [{ nr: MLOCK2, start: 0x40000000n, end: 0x40000000n + (2n << 30n), extraArgs: [0n], undoNr: MUNLOCK }];
  const { sessions } = simulate(ranges, 4 * MS, { fixedNs: 0.3 * MS, perCallNs: 5_000, perByteNs: 0.25, hiccup: { every: 4, ns: 30 * MS } });
  expect(sessions.length).toBeLessThan(250);
});

test("one 2 GiB range: cut into chunks by the measured rate, each within about twice the budget", () => {
  const ranges: ChunkableRange[] = [{ nr: MLOCK2, start: 0x40000000n, end: 0x40000000n + (2n << 30n), extraArgs: [0n], undoNr: MUNLOCK }];
  const { sessions, pauses } = simulate(ranges, 4 * MS, { fixedNs: 0.3 * MS, perCallNs: 5_000, perByteNs: 0.25 });
  expect(covered(sessions)).toEqual([[ranges[0].start, ranges[0].end]]);
  expect(Math.max(...pauses)).toBeLessThanOrEqual(8 * MS);
  // 2 GiB at 0.25 ns/B is 537 ms of work: not far above 537 / 3.7 sessions.
  expect(sessions.length).toBeLessThan(250);
});

test("a fixed cost above the budget: calls still get a quarter of it, so holds grow little and sessions stay few", () => {
  const { sessions, pauses } = simulate(small(200), 1 * MS, { fixedNs: 3 * MS, perCallNs: 40_000, perByteNs: 0 });
  expect(sessions[0].length).toBe(1);
  // A quarter of 1 ms is 5 calls of 40 us (+ the handoff): 200 calls in about 40 sessions, not 200.
  expect(sessions.length).toBeLessThanOrEqual(55);
  expect(Math.max(...pauses)).toBeLessThanOrEqual(3 * MS + 0.4 * MS);
});
