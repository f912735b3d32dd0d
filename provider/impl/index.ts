// The implementation behind the provider stub (provider/provider.ts), loaded by package
// name at call time: `require("pulumi-lockmem/provider-impl")`.
import { checkInputs, normalizeInputs } from "./check";
import { diffState } from "./diff";
import { create, read, remove, update } from "./operations";
import { ProviderInputs, ProviderOutputs } from "./state";

export const implementation = {
  async check(_olds: Record<string, unknown>, news: Record<string, unknown>) {
    const failures = checkInputs(news);
    return { inputs: failures.length === 0 ? normalizeInputs(news) : news, failures };
  },
  async diff(_id: string, olds: ProviderOutputs, news: ProviderInputs) {
    const d = diffState(olds, news);
    return { changes: d.changes, replaces: d.replaces, deleteBeforeReplace: d.deleteBeforeReplace };
  },
  create: (inputs: ProviderInputs) => create(inputs),
  read: (id: string, props: ProviderOutputs) => read(id, props),
  update: (id: string, olds: ProviderOutputs, news: ProviderInputs) => update(id, olds, news),
  delete: (id: string, props: ProviderOutputs) => remove(id, props),
};

export type Implementation = typeof implementation;
export { ProviderInputs, ProviderOutputs, ProcessState } from "./state";
