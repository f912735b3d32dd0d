// `lockmem agent --serve`: many requests over one run, one JSON line in, one JSON line out,
// in order, until stdin ends. The provider keeps one per SSH connection, so that an
// operation costs a line on an open channel instead of starting Node on the host.
import { Readable, Writable } from "stream";
import { StringDecoder } from "string_decoder";
import { AgentReply, MAX_REQUEST_BYTES, errorReply } from "./protocol";
import { handleRequest } from "./server";
import { lingerOf, listenResident } from "./resident";

/**
 * Requests read but not answered yet, at most: past it the agent stops reading its input
 * until one is answered (seen before: 200k queued requests held 134 MB).
 */
export const MAX_PENDING_REQUESTS = 16;

/** Writes one reply line, waiting for the stream to take it when it is full. */
function writeLine(out: Writable, text: string): Promise<void> {
  return new Promise((resolve) => {
    if (out.destroyed || out.writableEnded) return resolve();
    if (out.write(text + "\n")) return resolve();
    const done = (): void => {
      out.off("drain", done);
      out.off("close", done);
      out.off("error", done);
      resolve();
    };
    out.on("drain", done);
    out.on("close", done);
    out.on("error", done);
  });
}

/** The answer to a line longer than MAX_REQUEST_BYTES, which is then dropped up to its newline. */
function oversizeReply(): AgentReply {
  return errorReply({
    code: "EUSAGE",
    message: `request: a line longer than ${MAX_REQUEST_BYTES} bytes was discarded up to its end`,
    hint: "send one JSON request per line, each under the limit",
  });
}

/** A line over MAX_REQUEST_BYTES, answered once (oversizeReply) and dropped. */
const OVERSIZE = Symbol("oversize");

/**
 * The framing of the input, by newline only: a line over the size limit is answered with
 * one error and discarded through its newline, so no part of it is ever read as a request
 * of its own (issue 14: the tail of a split oversize line ran as a request).
 */
class RequestLines {
  private buffered = "";
  /** Where the lines not taken yet start in `buffered`. */
  private pos = 0;
  private discarding = false;
  private readonly decoder = new StringDecoder("utf8");
  ended = false;

  add(chunk: Buffer): void {
    this.buffered = this.buffered.slice(this.pos) + this.decoder.write(chunk);
    this.pos = 0;
  }

  finish(): void {
    this.add(Buffer.alloc(0));
    this.buffered += this.decoder.end();
    this.ended = true;
  }

  /** No complete line is waiting. */
  get drained(): boolean {
    return this.buffered.indexOf("\n", this.pos) < 0;
  }

  /** The next request line (blank lines skipped), OVERSIZE, or undefined when none is complete yet. */
  next(): string | typeof OVERSIZE | undefined {
    for (let nl = this.buffered.indexOf("\n", this.pos); nl >= 0; nl = this.buffered.indexOf("\n", this.pos)) {
      const line = this.buffered.slice(this.pos, nl);
      this.pos = nl + 1;
      if (this.discarding) this.discarding = false;
      else if (line.trim() !== "") return line;
    }
    return this.tail();
  }

  /** What to do with the text after the last newline. */
  private tail(): typeof OVERSIZE | string | undefined {
    const rest = this.buffered.slice(this.pos);
    this.buffered = "";
    this.pos = 0;
    if (this.discarding) return undefined;
    if (Buffer.byteLength(rest, "utf8") > MAX_REQUEST_BYTES) {
      // Too long and no newline yet: answer now, drop what came, and the rest up to the newline.
      this.discarding = true;
      return OVERSIZE;
    }
    if (this.ended && rest.trim() !== "") return rest;
    this.buffered = rest;
    return undefined;
  }
}

/**
 * The requests of every stream this agent serves, one at a time in arrival order: the
 * agent never runs two operations at once (a resident agent serves several connections).
 */
export class RequestQueue {
  private tail: Promise<void> = Promise.resolve();
  private running = 0;
  /** When the last request ended (ms since the epoch). */
  lastActivity = Date.now();

  get idle(): boolean {
    return this.running === 0;
  }

  run(work: () => Promise<void>): Promise<void> {
    this.running++;
    const done = this.tail.then(work).finally(() => {
      this.running--;
      this.lastActivity = Date.now();
    });
    this.tail = done.catch(() => undefined);
    return done;
  }
}

/** Serves the JSON lines of `input` until it ends and every request read is answered on `output`. */
export async function serveStream(input: Readable, output: Writable, queue: RequestQueue): Promise<void> {
  const lines = new RequestLines();
  let pending = 0;
  let answered: Promise<void> = Promise.resolve();
  let finished: () => void = () => undefined;
  const allAnswered = new Promise<void>((resolve) => (finished = resolve));

  const answer = (item: string | typeof OVERSIZE): void => {
    pending++;
    answered = queue.run(async () => {
      const reply = item === OVERSIZE ? oversizeReply() : (await handleRequest(item)).reply;
      await writeLine(output, JSON.stringify(reply));
      pending--;
      pump();
    });
  };

  // Takes complete lines while fewer than MAX_PENDING_REQUESTS wait (the text after the
  // last newline is looked at even then), and pauses or resumes reading accordingly.
  const pump = (): void => {
    while (pending < MAX_PENDING_REQUESTS || lines.drained) {
      const item = lines.next();
      if (item === undefined) break;
      answer(item);
    }
    if (lines.ended) {
      if (pending === 0 && lines.drained) finished();
    } else if (pending >= MAX_PENDING_REQUESTS) {
      input.pause();
    } else {
      input.resume();
    }
  };

  const end = (): void => {
    if (lines.ended) return;
    lines.finish();
    pump();
  };
  input.on("data", (chunk: Buffer) => {
    lines.add(chunk);
    pump();
  });
  input.on("end", end);
  input.on("close", end);
  input.on("error", end);
  await allAnswered;
  await answered.catch(() => undefined);
}

export async function agentServe(): Promise<void> {
  // The agent must finish what it started even if the SSH session that ran it goes away.
  process.on("SIGHUP", () => undefined);
  process.stdout.on("error", () => undefined);
  process.stderr.on("error", () => undefined);
  const queue = new RequestQueue();
  const linger = lingerOf(process.argv);
  const resident = linger === undefined ? undefined : await listenResident(linger, queue);
  await serveStream(process.stdin, process.stdout, queue);
  await resident?.untilIdle();
}
