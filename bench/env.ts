// Bench knobs from the environment: BENCH_* integers, with a clear error for a bad value.

/** `name` as an integer >= `min`, or `fallback` when unset or empty. */
export function envInt(name: string, fallback: number, min = 1): number {
  const text = process.env[name];
  if (text === undefined || text === "") return fallback;
  const v = Number(text);
  if (!Number.isInteger(v) || v < min) throw new TypeError(`${name}: expected an integer >= ${min}, got ${JSON.stringify(text)}`);
  return v;
}
