// The implementation behind the provider stub (provider/provider.ts), loaded by package
// name at call time: `require("pulumi-lockmem/provider-impl")`.
import { checkInputs, normalizeInputs } from "./check";
import { diffState } from "./diff";
import { create, read, remove, update } from "./operations";
import { ProviderInputs, ProviderOutputs } from "./state";
import { trace } from "../trace";

/** Traces an operation's start and end (LOCKMEM_TRACE). */
async function traced<T>(op: string, props: { target?: unknown }, fn: () => Promise<T>): Promise<T> {
  const what = `${op} ${JSON.stringify(props.target ?? null)}`;
  trace("op-start", what);
  try {
    return await fn();
  } finally {
    trace("op-end", what);
  }
}

export const implementation = {
  async check(_olds: Record<string, unknown>, news: Record<string, unknown>) {
    trace("check", JSON.stringify(news.target ?? null));
    const failures = checkInputs(news);
    return { inputs: failures.length === 0 ? normalizeInputs(news) : news, failures };
  },
  async diff(_id: string, olds: ProviderOutputs, news: ProviderInputs) {
    trace("diff", JSON.stringify(news.target ?? null));
    const d = diffState(olds, news);
    return { changes: d.changes, replaces: d.replaces, deleteBeforeReplace: d.deleteBeforeReplace };
  },
  create: (inputs: ProviderInputs) => traced("create", inputs, () => create(inputs)),
  read: (id: string, props: ProviderOutputs) => traced("read", props, () => read(id, props)),
  update: (id: string, olds: ProviderOutputs, news: ProviderInputs) => traced("update", news, () => update(id, olds, news)),
  delete: (id: string, props: ProviderOutputs) => traced("delete", props, () => remove(id, props)),
};

export type Implementation = typeof implementation;
export { ProviderInputs, ProviderOutputs, ProcessState } from "./state";
