// The glibc the deploy check asks of a host (ADDON_GLIBC_FLOOR) must be what the shipped
// addons really need: a host between the floor and the real need passes the check and then
// cannot load the addon. Read from each prebuild's ELF version needs (.gnu.version_r).
import * as fs from "fs";
import * as path from "path";
import { prebuiltAddonPath, SHIPPED_ARCHES } from "../../src/arch";
import { ADDON_GLIBC_FLOOR } from "../../provider/agent/host-probe";
import { repoRoot } from "../support/repo";

const SHT_GNU_VERNEED = 0x6ffffffe;

/** The symbol versions an ELF64 little-endian shared object needs, by library. */
function versionNeeds(file: string): Map<string, string[]> {
  const b = fs.readFileSync(file);
  const shoff = Number(b.readBigUInt64LE(0x28));
  const shentsize = b.readUInt16LE(0x3a);
  const shnum = b.readUInt16LE(0x3c);
  const section = (i: number) => {
    const o = shoff + i * shentsize;
    return { type: b.readUInt32LE(o + 4), offset: Number(b.readBigUInt64LE(o + 0x18)), link: b.readUInt32LE(o + 0x28), info: b.readUInt32LE(o + 0x2c) };
  };
  const cstr = (at: number) => b.toString("latin1", at, b.indexOf(0, at));
  const needs = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (s.type !== SHT_GNU_VERNEED) continue;
    const strtab = section(s.link).offset;
    let vn = s.offset;
    for (let n = 0; n < s.info; n++) {
      const names: string[] = [];
      let aux = vn + b.readUInt32LE(vn + 8);
      for (let k = 0; k < b.readUInt16LE(vn + 2); k++) {
        names.push(cstr(strtab + b.readUInt32LE(aux + 8)));
        aux += b.readUInt32LE(aux + 12);
      }
      needs.set(cstr(strtab + b.readUInt32LE(vn + 4)), names);
      vn += b.readUInt32LE(vn + 12);
    }
  }
  return needs;
}

const numeric = (v: string) => v.split(".").map(Number);
function compare(a: string, b: string): number {
  const [x, y] = [numeric(a), numeric(b)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
}

test.each(SHIPPED_ARCHES)("the %s addon needs no glibc newer than ADDON_GLIBC_FLOOR", (arch) => {
  const needs = versionNeeds(path.join(repoRoot(), prebuiltAddonPath(arch)));
  const glibc = [...needs.entries()].filter(([lib]) => /^(libc|libm|libpthread|libdl|librt)\.so/.test(lib)).flatMap(([, v]) => v);
  expect(glibc.length).toBeGreaterThan(0);
  const newest = glibc.map((v) => v.replace(/^GLIBC_/, "")).filter((v) => /^\d+(\.\d+)*$/.test(v)).sort(compare).pop()!;
  expect({ arch, newest, atMostFloor: compare(newest, ADDON_GLIBC_FLOOR) <= 0 }).toEqual({ arch, newest, atMostFloor: true });
});
