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
 * The cost model, pause = fixed + calls * perCall + bytes * perByte, fitted to the last few
 * sessions. Scheduling noise on a busy machine only ever adds to a session (the tracer or
 * the target waits for a CPU), and it does not grow with the batch: so the fixed part is the
 * least any recent session needed beyond its calls, and the per-call part the median of what
 * the sessions needed per call beyond that. A plain fit (or "the slowest recent session
 * decides") shrank batches to a few calls after every hiccup: 100 sessions for 1,000 calls on
 * a loaded machine, without making any hold shorter. The per-byte rate is the (upper) median
 * of the recent large calls: systematic slowness shows within a few sessions, and a hiccup
 * does not shrink every chunk after it.
 */
export class SessionPacer {
  private fixedNs = 300_000;
  private perCallNs = 30_000;
  private perByteNs = 2;
  private recent: { n: number; y: number }[] = [];
  /** Recent per-byte rates of calls large enough to show one. */
  private rates: number[] = [];

  /** budgetNs: what one session may hold the target for. */
  constructor(private readonly budgetNs: number) {}

  /** Calls for the next session: as many as the model says fit, and at least one. */
  next(cursor: RangeCursor): SyscallOp[] {
    const ops: SyscallOp[] = [];
    let left = this.budgetNs - this.fixedNs;
    while (!cursor.done) {
      const len = cursor.peekLength();
      const whole = this.perCallNs + len * this.perByteNs;
      if (whole <= left) {
        ops.push(cursor.take(len));
        left -= whole;
        // The first session has one call: what a session costs is unknown until then, and
        // on a target with many threads the fixed part alone can exceed the budget.
        if (this.recent.length === 0) break;
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
    let bytes = 0;
    ops.forEach((op, i) => {
      const len = Number(op.args[1]);
      bytes += len;
      if (len >= RATE_SAMPLE_BYTES && cost.callNs[i] !== undefined) keepRecent(this.rates, cost.callNs[i] / len);
    });
    if (this.rates.length > 0) this.perByteNs = upperMedian(this.rates);
    keepRecent(this.recent, { n: ops.length, y: Math.max(0, cost.pauseNs - bytes * this.perByteNs) });
    // Two rounds: the fixed part with the current per-call estimate, then the per-call part
    // with that fixed part, and again. Only sessions of several calls say what a call costs:
    // with one call each, the spread of the noise would pass for it.
    for (let round = 0; round < 2; round++) {
      this.fixedNs = Math.max(0, Math.min(...this.recent.map((r) => r.y - r.n * this.perCallNs)));
      const samples = this.recent.filter((r) => r.n >= PER_CALL_SAMPLE_CALLS).map((r) => (r.y - this.fixedNs) / r.n);
      if (samples.length > 0) this.perCallNs = Math.max(MIN_PER_CALL_NS, upperMedian(samples));
    }
  }
}

function keepRecent<T>(list: T[], item: T): void {
  list.push(item);
  if (list.length > RECENT) list.shift();
}

/** The median, the higher of the two middle values for an even count (the cautious side). */
function upperMedian(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[sorted.length >> 1];
}

/** Sessions the model is fitted to. */
const RECENT = 8;
/** A call in the target costs at least two syscall stops of a traced thread. */
const MIN_PER_CALL_NS = 2_000;
/** Sessions with fewer calls inform the fixed part only. */
const PER_CALL_SAMPLE_CALLS = 4;
