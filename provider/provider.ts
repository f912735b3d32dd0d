// The dynamic provider that Pulumi serializes into state as a closure. It is a thin stub:
// each method loads the implementation by package name when it is called, so `refresh` and
// `destroy` (which run the closure stored in old state) always run the installed code, and
// the closure captures no client, no native object and no secret (DESIGN.md).
import * as pulumi from "@pulumi/pulumi";

/**
 * Loads `pulumi-lockmem/provider-impl` by package name, from the working directory of the
 * provider process (the Pulumi project: its node_modules, or inside a checkout of this
 * package the package's self-reference, "exports" in package.json), else from where the
 * running @pulumi/pulumi SDK is installed (the project's node_modules).
 */
function implementation(): Required<Pick<pulumi.dynamic.ResourceProvider, "check" | "diff" | "read" | "update" | "delete">> & pulumi.dynamic.ResourceProvider {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const nodeModule: typeof import("module") = require("module");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const nodePath: typeof import("path") = require("path");
  const from = [nodePath.join(process.cwd(), "lockmem-provider.js"), process.argv[1]].filter(Boolean);
  for (const base of from) {
    try {
      return nodeModule.createRequire(base)("pulumi-lockmem/provider-impl").implementation;
    } catch (e) {
      if (!String((e as Error).message).startsWith("Cannot find module 'pulumi-lockmem/provider-impl'")) throw e;
    }
  }
  throw new Error(`cannot load pulumi-lockmem (looked from ${from.join(" and ")}): install it in the Pulumi project (npm install pulumi-lockmem)`);
}

export const lockmemProvider: pulumi.dynamic.ResourceProvider = {
  check: (olds, news) => implementation().check(olds, news),
  diff: (id, olds, news) => implementation().diff(id, olds, news),
  create: (inputs) => implementation().create(inputs),
  read: (id, props) => implementation().read(id, props),
  update: (id, olds, news) => implementation().update(id, olds, news),
  delete: (id, props) => implementation().delete(id, props),
};
