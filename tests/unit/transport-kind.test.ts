// The provider asks the transport kind which machine the settings name (diff), how to check
// them (check) and how to name them (messages): provider/transport (transportFor).
import { diffState } from "../../provider/impl/diff";
import { ProviderOutputs } from "../../provider/impl/state";
import { transportFor } from "../../provider/transport";

const conn = { host: "db1", password: "pw" };
const olds = (connection?: object): ProviderOutputs =>
  ({ connection, target: { pid: 7 }, host: "db1", processes: [], lockedBytes: 0, inSync: true, drift: [], warnings: [] }) as unknown as ProviderOutputs;

test("another machine replaces the resource; another user or password on the same machine only changes it", () => {
  expect(diffState(olds(conn), { connection: { ...conn, host: "db2" }, target: { pid: 7 } } as never).replaces).toEqual(["connection"]);
  expect(diffState(olds(conn), { connection: { ...conn, port: 2222 }, target: { pid: 7 } } as never).replaces).toEqual(["connection"]);
  const user = diffState(olds(conn), { connection: { ...conn, user: "ops" }, target: { pid: 7 } } as never);
  expect(user.replaces).toEqual([]);
  expect(user.changed).toEqual(["connection"]);
  expect(diffState(olds(conn), { connection: { ...conn, port: 22 }, target: { pid: 7 } } as never).replaces).toEqual([]);
  expect(diffState(olds(undefined), { connection: conn, target: { pid: 7 } } as never).replaces).toEqual(["connection"]);
});

test("messages name the machine, never a credential", () => {
  expect(transportFor({ host: "db1", user: "ops", password: "s3cret" }).where()).toBe("ssh ops@db1:22");
  expect(transportFor(undefined).where()).toBe("local");
  const sock = process.env.SSH_AUTH_SOCK;
  delete process.env.SSH_AUTH_SOCK;
  try {
    expect(transportFor({ host: "db1" } as never).check()).toMatch(/no credentials/);
  } finally {
    if (sock !== undefined) process.env.SSH_AUTH_SOCK = sock;
  }
});
