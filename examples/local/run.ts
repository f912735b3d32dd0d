// Inline runner of examples/local for a machine without a Pulumi language host.
// Needs the `pulumi` CLI on PATH (here: `source scripts/toolchain.sh`) and root.
//
//   npm run example:local                 demo: start a process, up, preview, destroy
//   npm run example:local -- up --pid N   one operation (up|preview|refresh|destroy) on pid N
import { execFileSync } from "child_process";
import * as fs from "fs";
import { exampleStack, runOperation } from "../inline";
import { localProgram } from "./program";

function lockedVmas(pid: number): number {
  return fs.readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n").filter((l) => l.startsWith("VmFlags:") && / lo( |$)/.test(l)).length;
}

async function main(argv: string[]): Promise<void> {
  const pidAt = argv.indexOf("--pid");
  const op = argv.find((a, i) => !a.startsWith("--") && i !== pidAt + 1) ?? "demo";
  if (op !== "demo") {
    if (pidAt < 0) throw new Error("give --pid N (or run without arguments for the demo)");
    const stack = await exampleStack("lockmem-local", localProgram({ pid: Number(argv[pidAt + 1]) }));
    await runOperation(stack, op);
    return;
  }
  // A process that is not our child (double fork through a shell that exits at once).
  const pid = Number(execFileSync("sh", ["-c", "sleep 600 >/dev/null 2>&1 & echo $!"], { encoding: "utf8" }).trim());
  console.log(`demo process: pid ${pid} (sleep 600)`);
  try {
    const stack = await exampleStack("lockmem-local", localProgram({ pid }));
    await runOperation(stack, "up");
    console.log(`\nthe kernel's view: ${lockedVmas(pid)} locked VMAs in /proc/${pid}/smaps\n`);
    await runOperation(stack, "preview");
    await runOperation(stack, "destroy");
    console.log(`\nafter destroy: ${lockedVmas(pid)} locked VMAs`);
    await stack.workspace.removeStack("dev");
  } finally {
    process.kill(pid, "SIGKILL");
  }
}

main(process.argv.slice(2)).catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
