// Smoke test of the real Pulumi engine (issue 8): a tiny dynamic resource that owns one
// file goes through up, preview, drift made behind Pulumi's back, refresh, repair and
// destroy. Run after `source scripts/toolchain.sh` (Node >= 22, the pulumi CLI).

import * as fs from "fs";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { countChanges, withStack } from "../support/stack";

interface FileInputs {
  path: string;
  content: string;
  note: string;
}

interface FileOutputs extends FileInputs {
  /** What refresh found on disk: false when the file is gone. */
  exists: boolean;
}

// The provider is serialized into state as a closure, so its methods capture nothing
// but plain functions and require what they need at call time (DESIGN.md).
const fileProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: FileInputs) {
    const nodeFs: typeof import("fs") = require("fs");
    nodeFs.writeFileSync(inputs.path, inputs.content);
    return { id: inputs.path, outs: { ...inputs, exists: true } };
  },

  // Reports what is on disk. A missing file is drift, not a deleted resource: an empty
  // id would silently drop the resource from state.
  async read(id: string, props: FileOutputs) {
    const nodeFs: typeof import("fs") = require("fs");
    const exists = nodeFs.existsSync(id);
    const content = exists ? nodeFs.readFileSync(id, "utf8") : "";
    return { id, props: { ...props, path: id, content, exists } };
  },

  // Without this, refresh would record the drift but never show or repair it.
  async diff(_id: string, olds: FileOutputs, news: FileInputs) {
    const replaces = olds.path !== news.path ? ["path"] : [];
    const changed: string[] = [...replaces];
    if (olds.content !== news.content || olds.exists === false) changed.push("content");
    if (olds.note !== news.note) changed.push("note");
    return { changes: changed.length > 0, replaces, deleteBeforeReplace: true };
  },

  async update(_id: string, _olds: FileOutputs, news: FileInputs) {
    const nodeFs: typeof import("fs") = require("fs");
    nodeFs.writeFileSync(news.path, news.content);
    return { outs: { ...news, exists: true } };
  },

  async delete(id: string) {
    const nodeFs: typeof import("fs") = require("fs");
    nodeFs.rmSync(id, { force: true });
  },
};

class ManagedFile extends pulumi.dynamic.Resource {
  declare readonly content: pulumi.Output<string>;
  declare readonly exists: pulumi.Output<boolean>;

  constructor(name: string, args: { path: string; content: string; note: pulumi.Input<string> }) {
    super(fileProvider, name, { ...args, exists: undefined }, {
      additionalSecretOutputs: ["note"],
    });
  }
}

const NOTE = "smoke-secret-3f9c1d";

test("a dynamic resource goes through up, preview, drift, refresh, repair and destroy", async () => {
  await withStack(async () => undefined, async (s) => {
    const file = path.join(s.dir, "managed.txt");
    const program = async () => {
      const f = new ManagedFile("smoke", { path: file, content: "hello\n", note: pulumi.secret(NOTE) });
      return { content: f.content, exists: f.exists };
    };

    const created = await s.up({ program });
    expect(created.changes.create).toBeGreaterThanOrEqual(1);
    expect(created.outputs).toEqual({ content: "hello\n", exists: true });
    expect(fs.readFileSync(file, "utf8")).toBe("hello\n");
    expect(s.stateFileText()).not.toContain(NOTE);

    const unchanged = await s.preview({ program, expectNoChanges: true });
    expect(countChanges(unchanged.changes)).toBe(0);

    // Drift 1: content edited behind Pulumi's back.
    fs.writeFileSync(file, "tampered\n");
    const edited = await s.refresh();
    expect(edited.changes.update).toBe(1);
    expect((await s.preview({ program })).changes.update).toBe(1);
    const repaired = await s.up({ program });
    expect(repaired.changes.update).toBe(1);
    expect(fs.readFileSync(file, "utf8")).toBe("hello\n");

    // Drift 2: the file deleted behind Pulumi's back stays in state, shown as drift.
    fs.rmSync(file);
    const deleted = await s.refresh();
    expect(deleted.changes.update).toBe(1);
    expect(deleted.changes.delete ?? 0).toBe(0);
    await s.up({ program });
    expect(fs.readFileSync(file, "utf8")).toBe("hello\n");
    expect(countChanges((await s.refresh()).changes)).toBe(0);
    expect(s.stateFileText()).not.toContain(NOTE);

    const destroyed = await s.destroy();
    expect(destroyed.changes.delete).toBeGreaterThanOrEqual(1);
    expect(fs.existsSync(file)).toBe(false);
  });
}, 300_000);
