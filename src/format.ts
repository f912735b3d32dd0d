// Human-readable output: a table laid out like `pmap -X`, and byte sizes.
import { RLIM_INFINITY } from "./proc/limits";
import { Mapping } from "./types";

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/** "512 B", "4.0 KiB", "256.0 MiB"; RLIM_INFINITY (the unlimited rlimit) prints as "unlimited". */
export function formatBytes(bytes: number | bigint): string {
  if (typeof bytes === "bigint" && bytes === RLIM_INFINITY) return "unlimited";
  let value = Number(bytes);
  if (value < 1024) return `${value} B`;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${UNITS[unit]}`;
}

export interface TableOptions {
  /** Extra column before Mapping, e.g. "locked", "selected", "not lockable". Empty string for none. */
  note?: (mapping: Mapping) => string;
  /** Header of the note column. Default "Note". */
  noteHeader?: string;
}

interface Column {
  header: string;
  alignRight: boolean;
  cells: string[];
  total?: string;
}

const kilobytes = (bytes: number): string => String(Math.round(bytes / 1024));

/** How pmap names a mapping without a path. */
function mappingLabel(mapping: Mapping): string {
  return mapping.path === "" ? "[ anon ]" : mapping.path;
}

/**
 * One row per mapping and a totals row, columns padded to their widest cell, numbers
 * (kB, as pmap prints them) right-aligned. The last column is not padded, so paths with
 * spaces stay readable and lines carry no trailing blanks.
 */
export function formatMappingsTable(mappings: Mapping[], opts: TableOptions = {}): string {
  const sum = (pick: (m: Mapping) => number): string => kilobytes(mappings.reduce((acc, m) => acc + pick(m), 0));
  const columns: Column[] = [
    { header: "Address", alignRight: false, cells: mappings.map((m) => m.start.toString(16).padStart(16, "0")), total: "total kB" },
    { header: "Kbytes", alignRight: true, cells: mappings.map((m) => kilobytes(m.size)), total: sum((m) => m.size) },
    { header: "RSS", alignRight: true, cells: mappings.map((m) => kilobytes(m.rss)), total: sum((m) => m.rss) },
    { header: "Anon", alignRight: true, cells: mappings.map((m) => kilobytes(m.anonymous)), total: sum((m) => m.anonymous) },
    { header: "Locked", alignRight: true, cells: mappings.map((m) => kilobytes(m.locked)), total: sum((m) => m.locked) },
    { header: "Mode", alignRight: false, cells: mappings.map((m) => m.perms) },
  ];
  if (opts.note) {
    const note = opts.note;
    columns.push({ header: opts.noteHeader ?? "Note", alignRight: false, cells: mappings.map((m) => note(m)) });
  }
  columns.push({ header: "Mapping", alignRight: false, cells: mappings.map(mappingLabel) });

  const widths = columns.map((c) => Math.max(c.header.length, (c.total ?? "").length, ...c.cells.map((cell) => cell.length)));
  const renderRow = (cells: string[]): string =>
    cells
      .map((cell, i) => {
        if (i === columns.length - 1) return cell;
        return columns[i].alignRight ? cell.padStart(widths[i]) : cell.padEnd(widths[i]);
      })
      .join(" ")
      .trimEnd();

  const lines = [renderRow(columns.map((c) => c.header))];
  for (let row = 0; row < mappings.length; row++) lines.push(renderRow(columns.map((c) => c.cells[row])));
  // As pmap -X: a dashed rule under the summed columns, then the totals.
  lines.push(renderRow(columns.map((c, i) => (c.total !== undefined ? "-".repeat(widths[i]) : ""))));
  lines.push(renderRow(columns.map((c) => c.total ?? "")));
  return lines.join("\n") + "\n";
}
