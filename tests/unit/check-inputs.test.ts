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
