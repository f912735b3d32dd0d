#!/usr/bin/env node
// `npm run demo`: lock the code of a process started here, show it locked, unlock it.
"use strict";
const { execFileSync } = require("child_process");
const path = require("path");

const lockmem = path.join(__dirname, "..", "bin", "lockmem");
const run = (...args) => {
  console.log(`\n$ lockmem ${args.join(" ")}`);
  try {
    process.stdout.write(execFileSync(process.execPath, [lockmem, ...args], { encoding: "utf8" }));
  } catch (err) {
    process.stdout.write(err.stdout || "");
    process.stderr.write(err.stderr || "");
    throw err;
  }
};

// A demo process that is not our child (double fork through a shell that exits at once):
// lockmem must never be its target's parent, since Node reaps its own children.
const pid = Number(execFileSync("sh", ["-c", "sleep 600 >/dev/null 2>&1 & echo $!"], { encoding: "utf8" }).trim());
console.log(`demo process: pid ${pid} (sleep 600)`);
try {
  run("doctor", "--pid", String(pid));
  run("status", "--pid", String(pid), "--perms", "r-x,rwx");
  run("lock", "--pid", String(pid));
  run("status", "--pid", String(pid), "--perms", "r-x,rwx");
  run("unlock", "--pid", String(pid));
  run("status", "--pid", String(pid), "--perms", "r-x,rwx");
} finally {
  process.kill(pid, "SIGKILL");
}
