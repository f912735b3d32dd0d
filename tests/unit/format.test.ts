import { readFileSync } from "fs";
import * as path from "path";
import { formatBytes, formatMappingsTable } from "../../src/format";
import { RLIM_INFINITY } from "../../src/proc/limits";
import { parseSmaps } from "../../src/proc/smaps";
import { isLocked } from "../../src/select";
import { Mapping } from "../../src/types";

const mappings = parseSmaps(readFileSync(path.join(__dirname, "../fixtures/proc/smaps-sample.txt"), "utf8"));

describe("formatBytes", () => {
  test.each<[number | bigint, string]>([
    [0, "0 B"],
    [1023, "1023 B"],
    [4096, "4.0 KiB"],
    [256 * 1024 * 1024, "256.0 MiB"],
    [1536 * 1024 * 1024, "1.5 GiB"],
    [8388608n, "8.0 MiB"],
    [RLIM_INFINITY, "unlimited"],
  ])("%s -> %s", (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});

describe("formatMappingsTable", () => {
  const small: Mapping[] = [
    { ...mappings[0], start: 0x1000n, size: 4096, rss: 4096, anonymous: 0, locked: 0, perms: "r-xp", path: "/opt/my app/bin" },
    { ...mappings[0], start: 0x7f0000000000n, size: 300 * 1024 * 1024, rss: 256 * 1024 * 1024, anonymous: 256 * 1024 * 1024, locked: 256 * 1024 * 1024, perms: "rw-p", path: "" },
  ];

  test("looks like pmap -X, with totals", () => {
    expect(formatMappingsTable(small)).toBe(
      [
        "Address          Kbytes    RSS   Anon Locked Mode Mapping",
        "0000000000001000      4      4      0      0 r-xp /opt/my app/bin",
        "00007f0000000000 307200 262144 262144 262144 rw-p [ anon ]",
        "---------------- ------ ------ ------ ------",
        "total kB         307204 262148 262144 262144",
        "",
      ].join("\n"),
    );
  });

  test("every row has its columns at the same offsets, for any widths", () => {
    const lines = formatMappingsTable(mappings).trimEnd().split("\n");
    const modeColumn = lines[0].indexOf("Mode");
    for (const line of lines.slice(1, -2)) expect(line.slice(modeColumn, modeColumn + 4)).toMatch(/^[r-][w-][x-][ps]$/);
    const lockedEnd = lines[0].indexOf("Locked") + "Locked".length;
    for (const line of lines.slice(1, -2)) expect(line[lockedEnd]).toBe(" ");
    // The rule and the totals end with the Locked column.
    for (const line of lines.slice(-2)) expect(line.length).toBe(lockedEnd);
    expect(lines).toHaveLength(mappings.length + 3);
    expect(lines.every((line) => line === line.trimEnd())).toBe(true);
  });

  test("an optional note column before the mapping", () => {
    const table = formatMappingsTable(mappings.slice(0, 7), { note: (m) => (isLocked(m) ? "locked" : ""), noteHeader: "State" });
    const lines = table.split("\n");
    expect(lines[0]).toMatch(/Mode State  Mapping$/);
    expect(lines.filter((l) => l.includes(" locked ")).length).toBe(2);
  });

  test("no mappings: headers and zero totals", () => {
    expect(formatMappingsTable([]).split("\n")[2]).toBe("total kB      0   0    0      0");
  });
});
