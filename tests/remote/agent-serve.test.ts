// `lockmem agent --serve`: many requests over one agent run, one line each, in order.
import { spawn } from "child_process";
import * as path from "path";
import { startTarget, stopAllTargets } from "../support/target";
import { isLockedVma, kernelMappings } from "../support/smaps";

jest.setTimeout(60_000);
afterAll(stopAllTargets);

const main = path.resolve(__dirname, "../../dist/src/agent/main.js");

function serve(lines: string[]): Promise<{ replies: Array<{ ok: boolean; error?: { code: string } }>; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.env.LOCKMEM_SYSTEM_NODE || process.execPath, [main, "--serve"], { stdio: ["pipe", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString("utf8")));
    child.on("error", reject);
    child.on("close", (code) =>
      resolve({
        replies: out
          .trim()
          .split("\n")
          .filter((l) => l !== "")
          .map((l) => JSON.parse(l)),
        code,
      }),
    );
    // One line at a time, as the provider does, then end of input ends the agent.
    child.stdin.end(lines.map((l) => l + "\n").join(""));
  });
}

test("answers every line in order, bad lines included, and exits at end of input", async () => {
  const t = await startTarget({ mode: "idle" });
  const target = { pid: t.pid };
  const { replies, code } = await serve([
    JSON.stringify({ v: 1, op: "version" }),
    JSON.stringify({ v: 1, op: "lock", args: { target } }),
    "this is not JSON",
    JSON.stringify({ v: 1, op: "status", args: { target } }),
    JSON.stringify({ v: 1, op: "lock", args: { target }, bogus: 1 }),
    JSON.stringify({ v: 1, op: "unlock", args: { target } }),
  ]);
  expect(code).toBe(0);
  expect(replies.map((r) => (r.ok ? "ok" : r.error?.code))).toEqual(["ok", "ok", "EUSAGE", "ok", "EUSAGE", "ok"]);
  // The lock and the unlock both happened, in order: nothing is locked at the end.
  expect(kernelMappings(t.pid).filter(isLockedVma)).toEqual([]);
});
