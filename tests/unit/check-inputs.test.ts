// The provider's check: bad connection settings are refused by name, without a transport
// and without dialing (validateSshConnection).
import { checkInputs } from "../../provider/impl/check";

const target = { pid: 1 };
const base = { host: "db1.example", password: "pw" };

test.each([
  [{ ...base, port: 70000 }, /port/],
  [{ ...base, host: "" }, /host/],
  [{ ...base, agentPath: "lockmem; rm -rf /" }, /agentPath/],
  [{ ...base, proxy: { host: "jump", port: -1 } }, /proxy|port/],
])("connection %j is refused, naming the field", (connection, field) => {
  const failures = checkInputs({ target, connection });
  expect(failures).toHaveLength(1);
  expect(failures[0].property).toBe("connection");
  expect(failures[0].reason).toMatch(field);
  expect(failures[0].reason).not.toContain("pw");
});

test("good settings pass", () => {
  expect(checkInputs({ target, connection: { ...base, port: 2222, user: "ops", agentPath: "/usr/local/bin/lockmem" } })).toEqual([]);
});

test.each([
  [{ lingerSeconds: -1 }, base, /agent\.lingerSeconds: must be a whole number of seconds from 0 to 3600, got -1/],
  [{ lingerSeconds: 1.5 }, base, /agent\.lingerSeconds: must be a whole number/],
  [{ lingerSeconds: 3601 }, base, /agent\.lingerSeconds: must be a whole number/],
  [{ lingerSeconds: "60" }, base, /agent\.lingerSeconds: must be a whole number.*got "60"/],
  [{ lingerSeconds: 60, install: "never" }, base, /agent\.lingerSeconds: only used with install: "auto"/],
  [{ lingerSeconds: 60 }, { ...base, sudo: true }, /agent\.lingerSeconds: not with connection\.sudo/],
  [{ lingerSeconds: 60 }, undefined, /agent\.lingerSeconds: only used for remote hosts/],
])("agent %j with connection %j is refused, naming agent.lingerSeconds", (agent, connection, reason) => {
  const failures = checkInputs({ target, connection, agent });
  expect(failures).toHaveLength(1);
  expect(failures[0].property).toBe("agent");
  expect(failures[0].reason).toMatch(reason);
});

test("a lingering agent over SSH without sudo passes, and 0 passes anywhere", () => {
  expect(checkInputs({ target, connection: base, agent: { lingerSeconds: 600 } })).toEqual([]);
  expect(checkInputs({ target, connection: { ...base, sudo: true }, agent: { lingerSeconds: 0 } })).toEqual([]);
});
