// Bounded pauses (--max-pause-ms): which calls go into the next ptrace session so that it
// holds the target for about the budget, learned from the sessions before it. Pure: no
// effects, the caller runs the sessions and hands back what each one cost.
//
// A session costs a fixed part (group stop, journal, re-arming other threads: it grows with
// the thread count and the machine's load), a part per call (two syscall stops and the
// kernel's per-VMA work: what 1,000 one-page mappings cost) and a part per byte (faulting
// in and locking pages: what one 2 GiB mapping costs). The old loop cut by bytes only and
// ran one session per mapping (issue 13: 1,000 small mappings took 1,010 sessions and 90 s).
import { SyscallOp } from "./native";
import { ChunkableRange } from "./plan";

const PAGE = 4096;
/** No call smaller than this when a range must be cut (unless the range is smaller). */
const MIN_CHUNK = 64 * 1024;
const MAX_CHUNK = 1 << 30;
/** Below this a call's time says little about the per-byte rate (the per-call cost dominates). */
const RATE_SAMPLE_BYTES = MIN_CHUNK;

/** One session's measurements, as the addon reports them. */
export interface SessionCost {
  pauseNs: number;
  /** In-kernel time of each call, in order. */
  callNs: number[];
}

/** Walks the ranges, handing out calls; a range may be cut into several calls. */
export class RangeCursor {
  private index = 0;
  private offset = 0n;

  constructor(private readonly ranges: ChunkableRange[]) {}

  get done(): boolean {
    return this.index >= this.ranges.length;
  }

  /** The next range's remaining length, in bytes. */
  peekLength(): number {
    const r = this.ranges[this.index];
    return Number(r.end - r.start - this.offset);
  }

  /** The next call, `len` bytes at most of the current range. */
  take(len: number): SyscallOp {
    const r = this.ranges[this.index];
    const start = r.start + this.offset;
    const n = BigInt(Math.min(len, Number(r.end - start)));
    this.offset += n;
    if (r.start + this.offset >= r.end) {
      this.index++;
      this.offset = 0n;
    }
    return { nr: r.nr, args: [start, n, ...r.extraArgs], ...(r.undoNr !== undefined ? { undo: { nr: r.undoNr, args: [start, n] } } : {}) };
  }
}

/**
 * The cost model, pause = fixed + calls * perCall + bytes * perByte. What each call took is
 * measured by the addon (from its entry stop to its exit stop), so the per-call and per-byte
 * parts come from the calls themselves; the fixed part is the rest of the session (group
 * stop, journal, re-arming other threads), the (upper) median of the last sessions. On a busy
 * machine the scheduler adds to every part at random: fitting all three to the session
 * totals put that noise into the per-call cost (1.9 ms per call, 573 sessions for 1,000
 * one-page mappings at load 8 on 2 cores), which shrank batches without making any hold
 * shorter.
 */
export class SessionPacer {
  private fixedNs = 300_000;
  private perCallNs = 30_000;
  private perByteNs = 2;
  /** Recent sessions' time beyond their calls. */
  private fixed: number[] = [];
  /** Recent in-call times of calls too small to show a per-byte rate. */
  private calls: number[] = [];
  /** Recent per-byte rates of calls large enough to show one. */
  private rates: number[] = [];
  private sessions = 0;

  /** budgetNs: what one session may hold the target for. */
  constructor(private readonly budgetNs: number) {}

  /** Calls for the next session: as many as the model says fit, and at least one. */
  next(cursor: RangeCursor): SyscallOp[] {
    const ops: SyscallOp[] = [];
    // When the fixed part alone fills the budget (many threads, a loaded machine), calls
    // still get a quarter of it: one call per session would not make any hold shorter, only
    // multiply the holds.
    let left = Math.max(this.budgetNs - this.fixedNs, this.budgetNs * CALLS_SHARE_MIN);
    while (!cursor.done) {
      const len = cursor.peekLength();
      const whole = this.perCallNs + len * this.perByteNs;
      if (whole <= left) {
        ops.push(cursor.take(len));
        left -= whole;
        // The first session has one call: what a session costs is unknown until then, and
        // on a target with many threads the fixed part alone can exceed the budget.
        if (this.sessions === 0) break;
        continue;
      }
      // Cut the range: what fits, in pages; a session always makes progress.
      const fit = Math.floor(Math.min(MAX_CHUNK, (left - this.perCallNs) / this.perByteNs) / PAGE) * PAGE;
      if (ops.length === 0) ops.push(cursor.take(Math.max(MIN_CHUNK, fit)));
      else if (fit >= MIN_CHUNK) ops.push(cursor.take(fit));
      break;
    }
    return ops;
  }

  /** What a session of `ops` cost. */
  learn(ops: SyscallOp[], cost: SessionCost): void {
    if (ops.length === 0) return;
    this.sessions++;
    let inCalls = 0;
    ops.forEach((op, i) => {
      const ns = cost.callNs[i];
      if (ns === undefined) return;
      inCalls += ns;
      const len = Number(op.args[1]);
      if (len >= RATE_SAMPLE_BYTES) keepRecent(this.rates, ns / len, RECENT_RATES);
      else keepRecent(this.calls, ns, RECENT_CALLS);
    });
    // Bytes: the slowest of the last few large calls (a slow fault-in is systematic, and a
    // chunk too large for the rate overruns the budget by the whole chunk).
    if (this.rates.length > 0) this.perByteNs = Math.max(...this.rates);
    if (this.calls.length > 0) this.perCallNs = upperMedian(this.calls) + HANDOFF_NS;
    keepRecent(this.fixed, Math.max(0, cost.pauseNs - inCalls - ops.length * HANDOFF_NS), RECENT);
    this.fixedNs = upperMedian(this.fixed);
  }
}

function keepRecent<T>(list: T[], item: T, size: number): void {
  list.push(item);
  if (list.length > size) list.shift();
}

/** The median, the higher of the two middle values for an even count (the cautious side). */
function upperMedian(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[sorted.length >> 1];
}

/** Sessions the fixed part is taken from. */
const RECENT = 8;
/** Large calls the per-byte rate is taken from. */
const RECENT_RATES = 4;
/** Small calls the per-call part is taken from. */
const RECENT_CALLS = 64;
/** A call's cost outside its own measured time: the stop before it (one tracer-target handoff). */
const HANDOFF_NS = 10_000;
/** The least share of the budget left to calls, whatever the fixed part. */
const CALLS_SHARE_MIN = 0.25;
